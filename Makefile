# make test                      unit tests (sets up .venv on first use)
# make export evaluate           the CPU main job: export the committed reference model, evaluate every artifact
# make train export evaluate     the whole pipeline (training takes hours on 2 CPU cores; ARGS="--time-budget 90m")
# Every target depends on the virtual environment, so there is no separate install step.
# ARGS passes flags to a stage, e.g. make train ARGS="--preset smoke".

PY ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: venv train export evaluate gate mobile mobile-parity test clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -c requirements.lock -e ".[test,jax]"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PYTHON) -m train $(ARGS)

export: venv
	$(PYTHON) -m export $(ARGS)

evaluate: venv
	$(PYTHON) -m evaluate $(ARGS)

mobile: venv
	$(PYTHON) -m export.mobile $(ARGS)

# The mobile example (app-style, one image at a time) against the evaluator's interpreter, all test images.
mobile-parity: mobile
	$(PYTHON) examples/check_mobile_parity.py $(ARGS)

# The CI accuracy gate: every format from the committed reference, all 10,000 test images, compared
# with the committed report (reports/diff.md; evaluate reads the baseline before it rewrites reports/).
gate: export
	$(PYTHON) -m evaluate --baseline reports/evaluation.json $(ARGS)

test: venv
	$(PYTHON) -m pytest

clean:
	rm -rf artifacts .cache .pytest_cache
