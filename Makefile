# Two commands do all set-up on a fresh machine:
#   make run    fine-tune a spam classifier on the SMS Spam Collection, then classify new messages
#   make test   run the test suite
# Each creates its own virtual environment in .venv first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch (set TORCH=torch for your platform's default build).
TORCH ?= torch==2.13.0
PIP_INSTALL := $(PY) -m pip install -q --disable-pip-version-check

# The main job's knobs; see README.md.
MODEL ?= gpt2
WEIGHTS ?= $(MODEL)
SOURCE ?=
RUN ?= runs/sms-spam-$(MODEL)
DATA ?= data/sms-spam
TRAIN_ARGS ?=

# Beside this checkout, ../shared/data may hold GPT-2's BPE files (for machines without internet).
SHARED_DATA ?= $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/gpt2/encoder.json),)
export GPTCLASSIFY_GPT2_BPE_DIR ?= $(SHARED_DATA)/gpt2
endif

.PHONY: run test test-fast venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) "$(TORCH)"
	$(PIP_INSTALL) -e ".[dev,tf]"
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The edit loop's tier: no processes started, no real weights (tests/conftest.py says which are left out).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not cuda"

run: $(VENV)/.installed
	$(VENV)/bin/gptclassify prepare sms-spam --out $(DATA) $(if $(SOURCE),--source $(SOURCE),)
	$(VENV)/bin/gptclassify train --data $(DATA) --model $(MODEL) --weights $(WEIGHTS) --out $(RUN) --overwrite $(TRAIN_ARGS)
	$(VENV)/bin/gptclassify predict $(RUN) --format table \
	  "You are a winner you have been specially selected to receive \$$1000 cash or a \$$2000 award." \
	  "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"

clean:
	rm -rf $(VENV) runs data
