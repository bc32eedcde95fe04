import { describe, expect, it } from "vitest";
import { Suggestions, completionId, partiallyAccepted } from "../src/suggestions";

const URI = "file:///a.py";

describe("completionId", () => {
  it("is the accept command's first argument, only for our command", () => {
    expect(completionId({ insertText: "x", command: { command: "codeloop.accept", arguments: ["cmpl-1"] } })).toBe("cmpl-1");
    expect(completionId({ insertText: "x", command: { command: "other.accept", arguments: ["cmpl-1"] } })).toBeUndefined();
    expect(completionId({ insertText: "x" })).toBeUndefined();
  });
});

describe("Suggestions", () => {
  it("keeps the last one per document until accepted, dismissed or closed", () => {
    const s = new Suggestions();
    s.shown(URI, "a", 10, 10, "return a + b");
    s.shown("file:///b.py", "b", 0, 0, "pass");
    expect(s.current(URI)?.id).toBe("a");
    s.forget(URI, "other");
    expect(s.current(URI)?.id).toBe("a");
    s.forgetId("a");
    expect(s.current(URI)).toBeUndefined();
    expect(s.current("file:///b.py")?.id).toBe("b");
    s.clear();
    expect(s.current("file:///b.py")).toBeUndefined();
  });

  it("counts what the user typed ahead as part of the same suggestion", () => {
    const s = new Suggestions();
    s.shown(URI, "a", 10, 10, "return a + b");
    const rest = s.shown(URI, "a", 13, 13, "urn a + b"); // typed "ret"; the server answers with the rest
    expect(rest.skipped).toBe(3);
  });
});

describe("partiallyAccepted", () => {
  const s = new Suggestions();
  const item = s.shown(URI, "a", 10, 10, "return a + b\n");

  it("is the accepted characters from the suggestion's start", () => {
    expect(partiallyAccepted(item, "", "return ")).toBe(7);
    expect(partiallyAccepted(item, "return ", "return a ")).toBe(9);
  });

  it("counts typed-ahead characters as the server does", () => {
    const t = new Suggestions();
    t.shown(URI, "a", 10, 10, "return a + b\n");
    const rest = t.shown(URI, "a", 13, 13, "urn a + b\n");
    expect(partiallyAccepted(rest, "", "urn ")).toBe(7);
  });

  it("is nothing when the command inserted nothing, something else, or everything", () => {
    expect(partiallyAccepted(item, "", "")).toBeUndefined();
    expect(partiallyAccepted(item, "ret", "ret")).toBeUndefined(); // typed before, nothing accepted now
    expect(partiallyAccepted(item, "", "print(")).toBeUndefined(); // another provider's suggestion
    expect(partiallyAccepted(item, "", "return a + b\n")).toBeUndefined(); // whole: the item's command reports it
  });

  it("works for an item that replaces typed text (a selected completion's head)", () => {
    const t = new Suggestions();
    const head = t.shown(URI, "h", 5, 8, "os.path.join(a, b)"); // "os." was typed, the item replaces it
    expect(partiallyAccepted(head, "os.", "os.path")).toBe(7);
  });
});
