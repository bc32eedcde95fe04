# The VS Code extension and the real workbench its end-to-end test runs in.
# Included from the Makefile; paths are relative to the repository root.
#
#   make extension    npm ci, type check, vitest, esbuild bundle, vsce package -> vscode-extension/codeloop-<version>.vsix
#   make code-server  code-server 4.100.3 into .code-server/ (once; /work/shared/EDITOR-TESTING.md's recipe)
#   make test-vscode  the end-to-end test (tests/vscode): needs both; skips with the reason otherwise

EXT_DIR     := vscode-extension
# Read with Python: on a fresh machine Node is only installed later, by $(VENV)/.installed-test.
EXT_VERSION := $(shell $(PYTHON) -c "import json; print(json.load(open('$(EXT_DIR)/package.json'))['version'])")
EXT_VSIX    := $(EXT_DIR)/codeloop-$(EXT_VERSION).vsix
EXT_STAMP   := $(EXT_DIR)/node_modules/.codeloop-installed
EXT_SOURCES := $(wildcard $(EXT_DIR)/src/*.ts) $(EXT_DIR)/package.json $(EXT_DIR)/esbuild.mjs $(EXT_DIR)/.vscodeignore $(EXT_DIR)/README.md

# code-server 4.100.3 is VS Code 1.100.3, the last release whose engines accept Node 20.
CODE_SERVER_VERSION := 4.100.3
CODE_SERVER_DIR     := .code-server
CODE_SERVER_STAMP   := $(CODE_SERVER_DIR)/.installed-$(CODE_SERVER_VERSION)
CODE_SERVER_VSCODE  := $(CODE_SERVER_DIR)/node_modules/code-server/lib/vscode
CODE_SERVER_APT     := libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep chromium
# npm 11 blocks dependencies' install scripts unless allowed; the native modules need theirs.
# (Older npm ignores the unknown flag.)
NPM_SCRIPTS         := --dangerously-allow-all-scripts

.PHONY: extension code-server test-vscode

# Exactly the locked packages; again only when the lock file changes.
$(EXT_STAMP): $(EXT_DIR)/package.json $(EXT_DIR)/package-lock.json | $(VENV)/.installed-test
	cd $(EXT_DIR) && npm ci --no-audit --no-fund
	touch $@

$(EXT_VSIX): $(EXT_STAMP) $(EXT_SOURCES) $(wildcard $(EXT_DIR)/test/*.ts $(EXT_DIR)/test/fakes/*.ts)
	cd $(EXT_DIR) && npm run --silent typecheck
	cd $(EXT_DIR) && npm test
	cd $(EXT_DIR) && npm run --silent build
	@# </dev/null: vsce asks questions on a terminal; package.json's "vsce" key answers them.
	cd $(EXT_DIR) && npx vsce package --no-dependencies --out codeloop-$(EXT_VERSION).vsix </dev/null

extension: $(EXT_VSIX)

# About 3 minutes and 300 MB, once. Any failure leaves no stamp: tests/vscode then skips and
# says why, instead of failing the whole suite.
$(CODE_SERVER_STAMP): | $(VENV)/.installed-test
	@echo "installing code-server $(CODE_SERVER_VERSION) into $(CODE_SERVER_DIR) (once: about 3 minutes, 300 MB)"
	@( set -e; \
	  missing=; for p in $(CODE_SERVER_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi; \
	  mkdir -p $(CODE_SERVER_DIR); cd $(CODE_SERVER_DIR); \
	  [ -f package.json ] || echo '{"name":"codeloop-code-server","private":true}' > package.json; \
	  export npm_config_nodedir=/usr npm_config_unsafe_perm=true npm_config_yes=true; \
	  npm install --no-audit --no-fund --ignore-scripts code-server@$(CODE_SERVER_VERSION); \
	  npm rebuild argon2 --foreground-scripts $(NPM_SCRIPTS); \
	  cd node_modules/code-server/lib/vscode; \
	  npm install --omit=dev --ignore-scripts --no-audit --no-fund; \
	  mkdir -p node_modules/@vscode/ripgrep/bin && ln -sf /usr/bin/rg node_modules/@vscode/ripgrep/bin/rg; \
	  npm rebuild $(NPM_SCRIPTS); \
	  ln -sfn node_modules node_modules.asar; \
	  (cd bin/remote-cli && ln -sf code-linux.sh code-server); (cd bin/helpers && ln -sf browser-linux.sh browser.sh); \
	  cd extensions && npm install --omit=dev --no-audit --no-fund $(NPM_SCRIPTS); \
	  cd $(CURDIR) && $(CODE_SERVER_DIR)/node_modules/.bin/code-server --version >/dev/null; \
	  touch $(CURDIR)/$@ ) \
	|| echo "!!! code-server $(CODE_SERVER_VERSION) could not be installed: the VS Code end-to-end test (tests/vscode) will be SKIPPED !!!"

code-server: $(CODE_SERVER_STAMP)

test-vscode: extension code-server
	$(BIN)/python -m pytest -ra tests/vscode $(PYTEST_ARGS)
