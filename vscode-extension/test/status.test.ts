import { describe, expect, it } from "vitest";
import { type ServerStatus, formatRate, parseStatus, statusView } from "../src/status";

const STATUS: ServerStatus = {
  serverUrl: "http://127.0.0.1:8000",
  reachable: true,
  adapter: "team-py@3",
  baseModel: "SmolLM2-135M-Instruct",
  experiment: null,
  arm: null,
  today: { adapter: "team-py@3", shown: 50, accepted: 21, acceptanceRate: 0.42 },
  error: null,
};
const ON = { on: true } as const;

describe("parseStatus", () => {
  it("reads the language server's answer", () => {
    expect(parseStatus(JSON.parse(JSON.stringify(STATUS)))).toEqual(STATUS);
  });

  it("refuses what is not one (an older server answers null)", () => {
    expect(parseStatus(null)).toBeUndefined();
    expect(parseStatus({ reachable: true })).toBeUndefined();
  });

  it("tolerates missing optional parts", () => {
    expect(parseStatus({ serverUrl: "http://x", reachable: false, error: "down" })).toMatchObject({ adapter: null, today: null, error: "down" });
  });
});

describe("statusView", () => {
  it("shows the live adapter and today's rate; a click turns completions off", () => {
    const view = statusView({ client: "running", enablement: ON, languageId: "python", status: STATUS });
    expect(view.text).toBe("$(sparkle) team-py@3 · 42 %");
    expect(view.tooltip).toContain("Today (team-py@3): 42 % accepted (21 of 50 shown)");
    expect(view.tooltip).toContain("Click to turn completions off.");
    expect(view).toMatchObject({ command: "codeloop.toggle", severity: "ok" });
  });

  it("shows the user's experiment arm", () => {
    const status = { ...STATUS, experiment: "py-rollout-1a2b", arm: "team-py@4", today: { ...STATUS.today!, adapter: "team-py@4" } };
    const view = statusView({ client: "running", enablement: ON, status });
    expect(view.text).toBe("$(sparkle) team-py@3 · A/B team-py@4 · 42 %");
    expect(view.tooltip).toContain("Experiment py-rollout-1a2b: your arm is team-py@4");
  });

  it("says the base model when no adapter is live, and a dash before any suggestion", () => {
    const status = { ...STATUS, adapter: "base", today: { adapter: "base", shown: 0, accepted: 0, acceptanceRate: null } };
    const view = statusView({ client: "running", enablement: ON, status });
    expect(view.text).toBe("$(sparkle) base · –");
    expect(view.tooltip).toContain("none (base model SmolLM2-135M-Instruct)");
    expect(view.tooltip).toContain("no suggestions shown yet");
  });

  it("warns when the completion server cannot be reached", () => {
    const status = { ...STATUS, reachable: false, adapter: null, today: null, error: "completion server unavailable at http://127.0.0.1:8000: ConnectError" };
    const view = statusView({ client: "running", enablement: ON, status });
    expect(view.severity).toBe("warning");
    expect(view.tooltip).toContain("ConnectError");
    expect(view.tooltip).toContain("codeloop.serverUrl");
  });

  it("is off globally or per language, and a click switches it back on", () => {
    expect(statusView({ client: "running", enablement: { on: false, reason: "disabled" }, status: STATUS }).text).toBe("$(circle-slash) codeloop off");
    const view = statusView({ client: "running", enablement: { on: false, reason: "language-disabled" }, languageId: "markdown", status: STATUS });
    expect(view.text).toBe("$(circle-slash) codeloop off for markdown");
    expect(view.tooltip).toContain("Click to turn completions on.");
  });

  it("shows starting until the first status", () => {
    expect(statusView({ client: "starting", enablement: ON }).text).toContain("codeloop");
    expect(statusView({ client: "running", enablement: ON }).tooltip).toContain("starting");
  });

  it("a failed language server is an error whose click shows the log", () => {
    const view = statusView({ client: "failed", failure: '"codeloop" was not found', enablement: ON });
    expect(view).toMatchObject({ severity: "error", command: "codeloop.showLog" });
    expect(view.tooltip).toContain('"codeloop" was not found');
  });

  it("formats rates as whole percents", () => {
    expect(formatRate(0.416)).toBe("42 %");
    expect(formatRate(null)).toBe("–");
  });
});
