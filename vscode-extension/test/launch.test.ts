import { describe, expect, it } from "vitest";
import { CrashPolicy, crashMessage, serverCommand, startFailureMessage } from "../src/launch";

describe("launch", () => {
  it("runs `<path> lsp`", () => {
    expect(serverCommand("/opt/codeloop/bin/codeloop")).toEqual({ command: "/opt/codeloop/bin/codeloop", args: ["lsp"] });
  });

  it("says what to do when the executable is missing", () => {
    const message = startFailureMessage("codeloop", new Error("Launching server using command codeloop failed. Error: spawn codeloop ENOENT"));
    expect(message).toContain('"codeloop" was not found');
    expect(message).toContain('"codeloop.path"');
  });

  it("says what to do when it is not executable", () => {
    expect(startFailureMessage("/tmp/x", new Error("spawn /tmp/x EACCES"))).toContain("not executable");
  });

  it("gives the first line of any other error", () => {
    const message = startFailureMessage("codeloop", "Server initialization failed.\nstack...");
    expect(message).toContain("Server initialization failed.");
    expect(message).not.toContain("stack");
  });

  it("names the restart command after repeated crashes", () => {
    expect(crashMessage("codeloop", 5, 3)).toContain("codeloop: Restart language server");
  });
});

describe("CrashPolicy", () => {
  it("restarts up to the limit within the window, then stops", () => {
    const p = new CrashPolicy(2, 1000);
    expect(p.crashed(0)).toBe(true);
    expect(p.crashed(10)).toBe(true);
    expect(p.crashed(20)).toBe(false);
    expect(p.count).toBe(3);
  });

  it("forgets crashes older than the window", () => {
    const p = new CrashPolicy(1, 1000);
    expect(p.crashed(0)).toBe(true);
    expect(p.crashed(5000)).toBe(true);
    p.reset();
    expect(p.count).toBe(0);
  });
});
