/**
 * The wiring, with `vscode` and the language client faked: commands and settings match
 * package.json, settings reach the server, the middleware gates and records, partial accepts
 * and Escape are reported, failures are told with what to do.
 */
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import * as vscode from "vscode";
import { behaviour, clients } from "./fakes/languageclient";
import { FakeDocument, FakeEditor, Range, reset, setConfig, state } from "./fakes/vscode";

vi.mock("vscode-languageclient/node", () => import("./fakes/languageclient"));

const { activate, deactivate } = await import("../src/extension");
const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const STATUS = {
  serverUrl: "http://127.0.0.1:8123", reachable: true, adapter: "team-py@3", baseModel: "m", experiment: null, arm: null,
  today: { adapter: "team-py@3", shown: 4, accepted: 1, acceptanceRate: 0.25 }, error: null,
};

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
const client = () => clients[clients.length - 1];
const bar = () => state.items[0];
const context = { subscriptions: [] as { dispose(): unknown }[] };

async function start(config: Record<string, unknown> = {}) {
  state.config = { ...config };
  activate(context as unknown as vscode.ExtensionContext);
  await tick();
  await tick();
}

/** What the language client's inline provider returns through our middleware. */
async function provide(doc: FakeDocument, items: unknown[]) {
  const middleware = client().clientOptions.middleware;
  const next = vi.fn(async () => items);
  const result = await middleware.provideInlineCompletionItems(doc, doc.positionAt(doc.text.length), {}, {}, next);
  return { result, next };
}

function item(id: string, text: string, doc: FakeDocument, start = doc.text.length) {
  const pos = doc.positionAt(start);
  return { insertText: text, range: new Range(pos, doc.positionAt(doc.text.length)), command: { command: "codeloop.accept", title: "", arguments: [id] } };
}

beforeEach(() => {
  reset();
  clients.length = 0;
  behaviour.startError = undefined;
  behaviour.status = STATUS;
  context.subscriptions = [];
});

afterEach(async () => {
  for (const d of context.subscriptions) d.dispose();
  await deactivate();
});

describe("activation", () => {
  it("registers exactly the commands package.json declares", async () => {
    await start();
    const declared = manifest.contributes.commands.map((c: { command: string }) => c.command).sort();
    const ours = [...state.commands.keys()].filter((c) => !["codeloop.accept", "codeloop.dismiss"].includes(c)).sort();
    expect(ours).toEqual(declared);
    for (const k of manifest.contributes.keybindings) expect(declared).toContain(k.command);
  });

  it("declares every setting it reads", async () => {
    const { DEFAULTS } = await import("../src/settings");
    const declared = Object.keys(manifest.contributes.configuration.properties);
    expect(declared.sort()).toEqual([...Object.keys(DEFAULTS).map((k) => `codeloop.${k}`), "codeloop.trace.server"].sort());
    for (const [key, value] of Object.entries(DEFAULTS)) {
      expect(manifest.contributes.configuration.properties[`codeloop.${key}`].default, key).toEqual(value);
    }
  });

  it("starts `codeloop lsp` from the path setting with the settings as initialization options", async () => {
    await start({ path: "/opt/cl/bin/codeloop", serverUrl: "http://gpu:8000", debounceMs: 40 });
    expect(client().serverOptions).toEqual({ command: "/opt/cl/bin/codeloop", args: ["lsp"] }); // no "--stdio"
    expect(client().clientOptions.initializationOptions()).toEqual({
      serverUrl: "http://gpu:8000", token: null, languages: ["*"], debounceMs: 40, maxTokens: null, latencyBudgetMs: 2000, lineBudgetMs: 150, client: "vscode",
    });
  });

  it("shows the live adapter and today's rate from codeloop/status", async () => {
    await start();
    expect(client().requests.map((r) => r.method)).toContain("codeloop/status");
    expect(bar().text).toBe("$(sparkle) team-py@3 · 25 %");
    expect(bar().command).toBe("codeloop.toggle");
    // The keybindings (Ctrl+Right, Escape) apply only while the server runs.
    expect(state.executed).toContainEqual({ command: "setContext", args: ["codeloop.running", true] });
  });
});

describe("when codeloop cannot be started", () => {
  it("says so with what to do, and offers the log", async () => {
    behaviour.startError = new Error("Launching server using command codeloop failed. Error: spawn codeloop ENOENT");
    state.errorChoice = "Show log";
    await start();
    await tick();
    expect(state.errors).toHaveLength(1);
    expect(state.errors[0].message).toContain('"codeloop.path"');
    expect(state.errors[0].actions).toEqual(["Show log", "Open settings"]);
    expect(state.channels.find((c) => c.name === "codeloop")!.show).toHaveBeenCalled();
    expect(bar()).toMatchObject({ text: "$(error) codeloop", command: "codeloop.showLog" });
  });

  it("restarts a crashing server a few times, then stops and says so", async () => {
    await start();
    const closed = client().clientOptions.errorHandler.closed;
    const actions = [];
    for (let i = 0; i < 5; i++) actions.push((await closed()).action);
    expect(actions).toEqual([2, 2, 2, 2, 1]); // Restart x4, then DoNotRestart
    expect(state.errors.at(-1)!.message).toContain("stopped 5 times");
    expect(state.errors.at(-1)!.actions).toContain("Restart");
  });
});

describe("settings changes", () => {
  it("are sent to the running server as didChangeConfiguration", async () => {
    await start();
    setConfig({ debounceMs: 300, token: "s3cret" });
    await tick();
    const sent = client().notifications.filter((n) => n.method === "workspace/didChangeConfiguration");
    expect(sent.at(-1)!.params).toEqual({ settings: expect.objectContaining({ debounceMs: 300, token: "s3cret" }) });
  });

  it("a new executable restarts the server", async () => {
    await start();
    setConfig({ path: "/other/codeloop" });
    await tick();
    await tick();
    expect(clients).toHaveLength(2);
    expect(client().serverOptions.command).toBe("/other/codeloop");
  });
});

describe("inline completions", () => {
  it("are not asked for where completions are off", async () => {
    await start({ disabledLanguages: ["python"] });
    const { result, next } = await provide(new FakeDocument("x = "), []);
    expect(result).toBeNull();
    expect(next).not.toHaveBeenCalled();
  });

  it("the status bar click turns them off, then on again", async () => {
    await start();
    await state.commands.get("codeloop.toggle")!();
    expect(state.updates.at(-1)).toMatchObject({ key: "codeloop.enable", value: false });
    expect(bar().text).toBe("$(circle-slash) codeloop off");
    await state.commands.get("codeloop.toggle")!();
    expect(state.updates.at(-1)).toMatchObject({ key: "codeloop.enable", value: true });
  });

  it("disabling for a language writes disabledLanguages", async () => {
    await start();
    vscode.window.activeTextEditor = new FakeEditor(new FakeDocument("x", "markdown")) as never;
    await state.commands.get("codeloop.disableLanguage")!();
    expect(state.updates.at(-1)).toMatchObject({ key: "codeloop.disabledLanguages", value: ["markdown"] });
    expect(bar().text).toBe("$(circle-slash) codeloop off for markdown");
  });

  it("a partial accept (next word) reports the accepted length", async () => {
    await start();
    const doc = new FakeDocument("def add(a, b):\n    ");
    const editor = new FakeEditor(doc);
    vscode.window.activeTextEditor = editor as never;
    await provide(doc, [item("cmpl-7", "return a + b", doc)]);
    state.builtins.set("editor.action.inlineSuggest.acceptNextWord", () => editor.insert("return "));
    await state.commands.get("codeloop.acceptNextWord")!();
    expect(client().serverCommands).toEqual([{ command: "codeloop.accept", args: ["cmpl-7", 7] }]);
  });

  it("accepting all of it by words leaves the report to the item's command", async () => {
    await start();
    const doc = new FakeDocument("x = ");
    const editor = new FakeEditor(doc);
    vscode.window.activeTextEditor = editor as never;
    await provide(doc, [item("cmpl-8", "42", doc)]);
    state.builtins.set("editor.action.inlineSuggest.acceptNextWord", () => editor.insert("42"));
    await state.commands.get("codeloop.acceptNextWord")!();
    expect(client().serverCommands).toEqual([]);
  });

  it("Escape hides the suggestion and reports it dismissed", async () => {
    await start();
    const doc = new FakeDocument("x = ");
    vscode.window.activeTextEditor = new FakeEditor(doc) as never;
    await provide(doc, [item("cmpl-9", "42", doc)]);
    await state.commands.get("codeloop.dismissSuggestion")!();
    expect(state.executed.map((e) => e.command)).toContain("editor.action.inlineSuggest.hide");
    expect(client().serverCommands).toEqual([{ command: "codeloop.dismiss", args: ["cmpl-9"] }]);
  });

  it("an accepted suggestion is forgotten (no dismiss for it later)", async () => {
    await start();
    const doc = new FakeDocument("x = ");
    vscode.window.activeTextEditor = new FakeEditor(doc) as never;
    await provide(doc, [item("cmpl-10", "42", doc)]);
    await vscode.commands.executeCommand("codeloop.accept", "cmpl-10"); // what VS Code runs on Tab
    await state.commands.get("codeloop.dismissSuggestion")!();
    expect(client().serverCommands).toEqual([{ command: "codeloop.accept", args: ["cmpl-10"] }]);
  });

  it("the plain completion fallback stays out of the suggest widget", async () => {
    await start();
    expect(client().clientOptions.middleware.provideCompletionItem()).toBeNull();
  });
});

describe("other commands", () => {
  it("show the protocol trace, and say how to turn it on", async () => {
    await start();
    await state.commands.get("codeloop.showTrace")!();
    expect(state.channels.find((c) => c.name === "codeloop: protocol trace")!.show).toHaveBeenCalled();
    expect(state.infos.at(-1)).toContain("log level is Trace");
  });

  it("open the dashboard at the server the language server uses", async () => {
    await start();
    await state.commands.get("codeloop.openDashboard")!();
    expect(state.opened).toEqual(["http://127.0.0.1:8123/"]);
  });

  it("trigger asks VS Code for a suggestion, or says why not", async () => {
    await start();
    await state.commands.get("codeloop.trigger")!();
    expect(state.executed.map((e) => e.command)).toContain("editor.action.inlineSuggest.trigger");
    setConfig({ enable: false });
    await state.commands.get("codeloop.trigger")!();
    expect(state.infos.at(-1)).toContain("codeloop is off");
  });
});
