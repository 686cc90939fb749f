#!/usr/bin/env python
"""Install detectron2 v0.6 (Python only) from the PyPI sdist pinned in requirements/detectron2.txt.

No registry ships a detectron2 wheel usable here, and the PyPI sdist lacks the C++
sources its setup.py tries to compile. This script downloads the sdist, checks its
sha256, drops the C++ extension build from setup.py, makes the model-zoo configs part
of the package data, relaxes the obsolete ``black`` pin, and installs it with
``pip install --no-build-isolation --no-deps`` (the dependencies come from
requirements/base.txt). ``qanet_d2.compat`` supplies what the missing extension
would have provided. Idempotent: does nothing if that version is already installed.
"""
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN_FILE = ROOT / "requirements" / "detectron2.txt"
INDEX_URL = os.environ.get("QANET_D2_SDIST_INDEX", "https://pypi.org/simple")


def read_pin():
    for line in PIN_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9A-Za-z.]+)\s+sha256=([0-9a-f]{64})", line)
        if not m:
            sys.exit(f"{PIN_FILE}: cannot parse line {line!r} (want 'name==version sha256=<hex>')")
        return m.groups()
    sys.exit(f"{PIN_FILE}: no pin found")


def installed_version():
    for dist in ("pb1-detectron2", "detectron2"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href"]


def sdist_url(name, version):
    page = f"{INDEX_URL.rstrip('/')}/{name}/"
    with urllib.request.urlopen(page, timeout=120) as r:
        parser = _Links()
        parser.feed(r.read().decode())
    want = f"{name}-{version}.tar.gz"
    for href in parser.hrefs:
        if href.split("#")[0].rsplit("/", 1)[-1] == want:
            return urllib.parse.urljoin(page, href.split("#")[0])
    sys.exit(f"{want} not found on {page}")


def patch_setup_py(path: Path):
    src = path.read_text()
    # The C++ extension: its sources are not in the sdist.
    src = src.replace("    ext_modules=get_extensions(),\n", "")
    src = src.replace('    cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},\n', "")
    # The configs live inside the package in the sdist; install them as package data.
    src = src.replace(
        'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},',
    )
    # Only black.format_str is used; the 2021 pin breaks with current click.
    src = src.replace('"black==21.4b2",', '"black",')
    # Only for caffe2 export, which does not exist in current torch.
    src = src.replace('"future",  # used by caffe2\n', "").replace('"pydot",  # used to save caffe2 SVGs\n', "")
    for must_be_gone in ("ext_modules=", "cmdclass=", "get_model_zoo_configs()}", "black==21.4b2", '"future"', '"pydot"'):
        if must_be_gone in src:
            sys.exit(f"patching {path} failed: {must_be_gone!r} still present")
    path.write_text(src)


def main():
    name, version, sha = read_pin()
    have = installed_version()
    if have == version:
        print(f"detectron2 {version} already installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = sdist_url(name, version)
        archive = Path(tmp) / url.rsplit("/", 1)[-1]
        print(f"downloading {url}")
        urllib.request.urlretrieve(url, archive)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != sha:
            sys.exit(f"{archive.name}: sha256 {digest} does not match the pin {sha} in {PIN_FILE}")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src_dir = Path(tmp) / f"{name}-{version}"
        patch_setup_py(src_dir / "setup.py")
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(src_dir)]
        )
    print(f"installed detectron2 {version} (Python only) from {name}")


if __name__ == "__main__":
    main()
