/** Names shared with the language server (`codeloop lsp`, lsp/server.py) and VS Code. */

/** Server commands; the language client registers them as VS Code commands of the same name. */
export const ACCEPT = "codeloop.accept"; // (completionId[, acceptedChars])
export const DISMISS = "codeloop.dismiss"; // (completionId)

/** Custom requests. */
export const STATUS_REQUEST = "codeloop/status";

/** VS Code's own inline-suggestion commands that ours wrap. */
export const VSCODE = {
  trigger: "editor.action.inlineSuggest.trigger",
  hide: "editor.action.inlineSuggest.hide",
  acceptNextWord: "editor.action.inlineSuggest.acceptNextWord",
  acceptNextLine: "editor.action.inlineSuggest.acceptNextLine",
} as const;

/** The extension's commands (package.json `contributes.commands` lists the same ids). */
export const COMMANDS = {
  toggle: "codeloop.toggle",
  enable: "codeloop.enable",
  disable: "codeloop.disable",
  enableLanguage: "codeloop.enableLanguage",
  disableLanguage: "codeloop.disableLanguage",
  trigger: "codeloop.trigger",
  openDashboard: "codeloop.openDashboard",
  showLog: "codeloop.showLog",
  showTrace: "codeloop.showTrace",
  restart: "codeloop.restart",
  acceptNextWord: "codeloop.acceptNextWord",
  acceptNextLine: "codeloop.acceptNextLine",
  dismissSuggestion: "codeloop.dismissSuggestion",
} as const;
