# make test                      unit tests (sets up .venv on first use), under 8 minutes on 2 cores
# make test-training             the tests that fit models for real (CI runs both)
# make export evaluate           the CPU main job: export the committed reference model, evaluate every artifact
# make train export evaluate     the whole pipeline (training takes hours on 2 CPU cores; ARGS="--time-budget 90m")
# Every target depends on the virtual environments it needs, so there is no separate install step.
# ARGS passes flags to a stage, e.g. make train ARGS="--preset smoke".

PY ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

MOBILE_VENV := .venv-mobile

.PHONY: venv venv-mobile train export evaluate gate gate-resnet20v1 mobile mobile-parity test test-training clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -c requirements.lock -e ".[test,jax]"
	touch $@

venv: $(VENV)/.installed

# The second environment: the TFLite metadata writer (export) and MediaPipe Tasks (evaluate), whose pins
# clash with TensorFlow's (requirements-mobile.lock says why). The writer's .so files link libusb: the one
# libusb-package ships is put where the loader finds it (pipeline/mobile_env.py sets LD_LIBRARY_PATH).
$(MOBILE_VENV)/.installed: requirements-mobile.lock
	$(PY) -m venv $(MOBILE_VENV)
	$(MOBILE_VENV)/bin/python -m pip install -q --upgrade pip
	$(MOBILE_VENV)/bin/python -m pip install -q --no-deps -r requirements-mobile.lock
	$(MOBILE_VENV)/bin/python -m pip check
	ln -sf "$$($(MOBILE_VENV)/bin/python -c 'import libusb_package, pathlib; print(pathlib.Path(libusb_package.__file__).parent / "libusb-1.0.so")')" $(MOBILE_VENV)/lib/libusb-1.0.so.0
	touch $@

venv-mobile: $(MOBILE_VENV)/.installed

train: venv
	$(PYTHON) -m train $(ARGS)

export: venv venv-mobile
	$(PYTHON) -m export $(ARGS)

evaluate: venv venv-mobile
	$(PYTHON) -m evaluate $(ARGS)

mobile: venv venv-mobile
	$(PYTHON) -m export.mobile $(ARGS)

# The mobile example (app-style, one image at a time) against the evaluator's interpreter, all test images.
mobile-parity: mobile
	$(PYTHON) examples/check_mobile_parity.py $(ARGS)

# The CI accuracy gate: every format from the committed reference, all 10,000 test images, compared
# with the committed report (reports/diff.md; evaluate reads the baseline before it rewrites reports/).
gate: export
	$(PYTHON) -m evaluate --baseline reports/evaluation.json $(ARGS)

# The seeds' base model (ResNet20 v1, models/resnet20v1/) through the same gate: every kind exported and
# scored on all 10,000 test images against its committed report; latency at all cores only (CI time).
gate-resnet20v1: venv venv-mobile
	$(PYTHON) -m export --checkpoint models/resnet20v1/model.h5 --out-dir artifacts-resnet20v1
	$(PYTHON) -m evaluate --manifest artifacts-resnet20v1/manifest.json --report-dir reports/resnet20v1 \
		--baseline reports/resnet20v1/evaluation.json --set 'evaluate.threads=[0]' $(ARGS)

test: venv venv-mobile
	$(PYTHON) -m pytest

# The tests that fit models for real (marked `training`; `make test` leaves them out): CI runs them too.
test-training: venv venv-mobile
	$(PYTHON) -m pytest -m training

clean:
	rm -rf artifacts artifacts-resnet20v1 .cache .pytest_cache
