import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTANT_CONFIG = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"


def load_script(relative_path: str, module_name: str):
    """A script of the repository (``tools/x.py``, ``datasets/x.py``) imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(module_name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def synth_datasets_root(tmp_path_factory) -> Path:
    """A DETECTRON2_DATASETS folder holding the tiny synthetic set as face_synth_{train,val}."""
    root = tmp_path_factory.mktemp("detectron2_datasets")
    subprocess.run(
        [sys.executable, str(REPO / "datasets" / "prepare_synthetic.py"), "--preset", "tiny", "--root", str(root / "face_synth")],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return root


def run_train_net(args, datasets_root, timeout=600, check=True, **popen_kwargs):
    """Run train_net.py as a user would, with DETECTRON2_DATASETS pointing at ``datasets_root``."""
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets_root), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_net.py"), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen_kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train_net.py {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
