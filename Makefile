# qanet_d2: `make quickstart` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.qanet_d2-setup
QUICKSTART_CFG ?= configs/quickstart/qanet_fcos_synth.yaml
QUICKSTART_OUT ?= output/quickstart
PYTEST_ARGS ?=

.PHONY: setup quickstart test real_faces_fine clean-venv

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

# The fine-class real-face model from the shipped six-class one (README "Fine classes"): 7.5 min on
# 2 idle CPU cores, ~10 min more the first time (fine labels); FASSEG prepared first
# (datasets/prepare_fasseg.py --src DIR).
FINE_OUT ?= output/real_faces
real_faces_fine: setup
	$(PY) datasets/prepare_synthetic.py --preset quickstart
	$(PY) datasets/prepare_synthetic.py --preset composite_fasseg
	$(PY) datasets/prepare_synthetic.py --preset composite_fasseg_photos
	test -f $${DETECTRON2_DATASETS:-datasets}/fasseg_fine/frontal_train.json || $(PY) datasets/derive_fasseg_fine.py
	$(PY) train_net.py --config-file configs/real_faces/qanet_yunet_fasseg_tuned.yaml OUTPUT_DIR $(FINE_OUT)/qanet_yunet_tuned
	$(PY) tools/init_fine_classifier.py $(FINE_OUT)/qanet_yunet_tuned/model_final.pth \
	    $(FINE_OUT)/qanet_yunet_fine_init.pth --coarse fasseg --fine fasseg_fine
	$(PY) train_net.py --config-file configs/real_faces/qanet_yunet_fasseg_fine.yaml \
	    MODEL.WEIGHTS $(FINE_OUT)/qanet_yunet_fine_init.pth OUTPUT_DIR $(FINE_OUT)/qanet_yunet_fine
	$(PY) tools/slim_checkpoint.py $(FINE_OUT)/qanet_yunet_fine/model_final.pth \
	    $(FINE_OUT)/qanet_yunet_fine/model_slim.pth --half --parts parser

clean-venv:
	rm -rf $(VENV)
