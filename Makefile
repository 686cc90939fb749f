# qanet_d2: `make quickstart` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.qanet_d2-setup
QUICKSTART_CFG ?= configs/quickstart/qanet_fcos_synth.yaml
QUICKSTART_OUT ?= output/quickstart
PYTEST_ARGS ?=

.PHONY: setup quickstart test clean-venv

setup: $(STAMP)

# Re-run only when a pin or the project metadata changes; every step is idempotent.
$(STAMP): requirements/torch.txt requirements/base.txt requirements/detectron2.txt pyproject.toml tools/install_detectron2.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/torch.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/base.txt
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $@

quickstart: setup
	$(PY) datasets/prepare_synthetic.py --preset quickstart
	$(PY) train_net.py --num-gpus 1 --config-file $(QUICKSTART_CFG) OUTPUT_DIR $(QUICKSTART_OUT)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean-venv:
	rm -rf $(VENV)
