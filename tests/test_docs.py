"""The README's and docs' examples run as written: their Python snippets and the README's first
command (parse your own photo with the shipped model)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def python_snippets(relative_path: str):
    return re.findall(r"```python\n(.*?)```", (REPO / relative_path).read_text(), flags=re.S)


def bash_commands(relative_path: str):
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / relative_path).read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


@pytest.fixture()
def photo_dir(tmp_path):
    from skimage import data

    cv2.imwrite(str(tmp_path / "photo.jpg"), np.ascontiguousarray(data.astronaut()[:, :, ::-1]))
    return tmp_path


def run_python(code: str, cwd: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("doc", ["README.md", "docs/tools.md"])
def test_python_snippets_run(doc, photo_dir):
    snippets = python_snippets(doc)
    assert snippets, f"{doc} has no Python example"
    for code in snippets:
        proc = run_python(code, photo_dir)
        assert proc.returncode == 0, f"{doc} snippet failed:\n{code}\n{proc.stderr[-3000:]}"


def test_readme_first_use_parses_your_photo_with_the_shipped_model(photo_dir):
    """The first command after the two set-up commands parses a photo with the shipped model."""
    commands = bash_commands("README.md")
    assert commands[:2] == ["make quickstart", "make test"]
    first = shlex.split(commands[2])
    assert first[0].endswith("python") and first[1] == "demo/demo.py" and "--config-file" not in first
    proc = subprocess.run([sys.executable, str(REPO / first[1]), *first[2:]], cwd=photo_dir, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    written = sorted(p.name for p in (photo_dir / "parsed").iterdir())
    assert written == ["labels.json", "photo.jpg", "photo.json", "photo_labels.png"]
