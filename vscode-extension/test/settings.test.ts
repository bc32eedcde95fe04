import { describe, expect, it } from "vitest";
import { DEFAULTS, type Settings, readSettings, restartReason, serverOptions, serverOptionsChanged } from "../src/settings";

const read = (values: Partial<Record<keyof Settings, unknown>>) => readSettings((key) => values[key]);

describe("readSettings", () => {
  it("gives the defaults for nothing set", () => {
    expect(read({})).toEqual(DEFAULTS);
  });

  it("keeps good values, trims text and the URL's trailing slash", () => {
    const s = read({ serverUrl: " http://gpu-box:8000/ ", token: " t0k ", languages: ["python", "go"], debounceMs: 0, maxTokens: 32, path: "/opt/cl/bin/codeloop" });
    expect(s).toMatchObject({ serverUrl: "http://gpu-box:8000", token: "t0k", languages: ["python", "go"], debounceMs: 0, maxTokens: 32, path: "/opt/cl/bin/codeloop" });
  });

  it("falls back to the default for a value of the wrong type or out of range", () => {
    const s = read({ enable: "yes", languages: "python", disabledLanguages: [1], debounceMs: 9000, maxTokens: 1.5, path: "  " });
    expect(s).toEqual(DEFAULTS);
    expect(read({ maxTokens: 0 }).maxTokens).toBeNull();
    expect([read({ latencyBudgetMs: 0 }), read({ latencyBudgetMs: null }), read({ latencyBudgetMs: 50 }), read({ latencyBudgetMs: 900 })]
      .map((x) => x.latencyBudgetMs)).toEqual([null, null, 2000, 900]);
    expect([read({ lineBudgetMs: 0 }), read({ lineBudgetMs: null }), read({ lineBudgetMs: -5 }), read({ lineBudgetMs: 400 }), read({})]
      .map((x) => x.lineBudgetMs)).toEqual([null, null, 150, 400, 150]);
  });
});

describe("serverOptions", () => {
  it("are the language server's camelCase options, with the client named", () => {
    const s = read({ serverUrl: "http://h:1", token: "abc", languages: ["python"], debounceMs: 75, maxTokens: 48 });
    expect(serverOptions(s)).toEqual({ serverUrl: "http://h:1", token: "abc", languages: ["python"], debounceMs: 75, maxTokens: 48, latencyBudgetMs: 2000, lineBudgetMs: 150, client: "vscode" });
  });

  it("send a cleared token or max tokens as null (the server keeps options it is not sent)", () => {
    const options = serverOptions(DEFAULTS);
    expect(options).toMatchObject({ token: null, maxTokens: null });
    expect(options).not.toHaveProperty("serverUrl"); // the server's own default
  });

  it("never send an empty languages list", () => {
    expect(serverOptions({ ...DEFAULTS, languages: [] }).languages).toEqual(["*"]);
  });

  it("change only when what the server sees changes", () => {
    expect(serverOptionsChanged(DEFAULTS, { ...DEFAULTS, enable: false, disabledLanguages: ["go"] })).toBe(false);
    expect(serverOptionsChanged(DEFAULTS, { ...DEFAULTS, debounceMs: 10 })).toBe(true);
  });
});

describe("restartReason", () => {
  it("restarts for a new executable or a cleared server URL, not for options", () => {
    expect(restartReason(DEFAULTS, { ...DEFAULTS, path: "/x/codeloop" })).toContain("codeloop.path");
    expect(restartReason({ ...DEFAULTS, serverUrl: "http://a:1" }, DEFAULTS)).toContain("cleared");
    expect(restartReason(DEFAULTS, { ...DEFAULTS, serverUrl: "http://a:1", token: "t", debounceMs: 5 })).toBeUndefined();
  });
});
