/**
 * The extension's settings (`codeloop.*`) and what the language server gets from them.
 * No `vscode` import: extension.ts reads the raw values and hands them over.
 */

export interface Settings {
  /** Completions on or off everywhere. */
  enable: boolean;
  /** Language ids where completions are off even when `enable` is on. */
  disabledLanguages: string[];
  /** The `codeloop` executable that runs `codeloop lsp`. */
  path: string;
  /** The completion server; empty: the language server's default (codeloop's settings). */
  serverUrl: string;
  token: string;
  /** Language ids to complete in; "*" means all. */
  languages: string[];
  debounceMs: number;
  /** null: the server's default. */
  maxTokens: number | null;
  /** Automatic suggestions: the server answers within this with what it has; null: no limit. */
  latencyBudgetMs: number | null;
  /** Automatic multi-line suggestions end with the line complete this long after the request; null: off. */
  lineBudgetMs: number | null;
}

export const DEFAULTS: Readonly<Settings> = Object.freeze({
  enable: true,
  disabledLanguages: [],
  path: "codeloop",
  serverUrl: "",
  token: "",
  languages: ["*"],
  debounceMs: 150,
  maxTokens: null,
  latencyBudgetMs: 2000,
  lineBudgetMs: 150,
});

/** The `client` name the server records with each completion. */
export const CLIENT_NAME = "vscode";

/**
 * Settings from raw values (`get("serverUrl")` → whatever the user wrote). A value of the
 * wrong type falls back to its default rather than reaching the server.
 */
export function readSettings(get: (key: keyof Settings) => unknown): Settings {
  const bool = (key: "enable", v = get(key)) => (typeof v === "boolean" ? v : DEFAULTS[key]);
  const text = (key: "path" | "serverUrl" | "token", v = get(key)) => (typeof v === "string" ? v.trim() : DEFAULTS[key]);
  const list = (key: "languages" | "disabledLanguages", v = get(key)) =>
    Array.isArray(v) && v.every((x) => typeof x === "string" && x.length > 0) ? [...(v as string[])] : [...DEFAULTS[key]];
  const whole = (v: unknown, lo: number, hi: number) => typeof v === "number" && Number.isInteger(v) && v >= lo && v <= hi;
  const debounce = get("debounceMs");
  const maxTokens = get("maxTokens");
  const budget = get("latencyBudgetMs");
  const lineBudget = get("lineBudgetMs");
  return {
    enable: bool("enable"),
    disabledLanguages: list("disabledLanguages"),
    path: text("path") || DEFAULTS.path,
    serverUrl: text("serverUrl").replace(/\/+$/, ""),
    token: text("token"),
    languages: list("languages"),
    debounceMs: whole(debounce, 0, 5000) ? (debounce as number) : DEFAULTS.debounceMs,
    maxTokens: whole(maxTokens, 1, 4096) ? (maxTokens as number) : null,
    // null or 0 turns the budget off; any other bad value keeps the default.
    latencyBudgetMs: budget === null || budget === 0 ? null : whole(budget, 100, 600000) ? (budget as number) : DEFAULTS.latencyBudgetMs,
    lineBudgetMs: lineBudget === null || lineBudget === 0 ? null : whole(lineBudget, 1, 600000) ? (lineBudget as number) : DEFAULTS.lineBudgetMs,
  };
}

/**
 * The language server's options (lsp/config.py, camelCase), sent as initializationOptions
 * and again through workspace/didChangeConfiguration. The server keeps an option it is not
 * sent, so a cleared token or max tokens is sent as null, never left out.
 */
export function serverOptions(s: Settings): Record<string, unknown> {
  return {
    ...(s.serverUrl ? { serverUrl: s.serverUrl } : {}),
    token: s.token || null,
    languages: s.languages.length ? s.languages : ["*"],
    debounceMs: s.debounceMs,
    maxTokens: s.maxTokens,
    latencyBudgetMs: s.latencyBudgetMs,
    lineBudgetMs: s.lineBudgetMs,
    client: CLIENT_NAME,
  };
}

/**
 * Why the language server must be restarted for new settings, or undefined when telling it
 * is enough: a new executable, or a server URL cleared back to the default (the server cannot
 * be told "your default" after start).
 */
export function restartReason(before: Settings, after: Settings): string | undefined {
  if (before.path !== after.path) return `"codeloop.path" changed to ${after.path}`;
  if (before.serverUrl && !after.serverUrl) return `"codeloop.serverUrl" was cleared`;
  return undefined;
}

/** True when the options the server sees differ. */
export function serverOptionsChanged(before: Settings, after: Settings): boolean {
  return JSON.stringify(serverOptions(before)) !== JSON.stringify(serverOptions(after));
}
