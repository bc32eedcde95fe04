import { describe, expect, it } from "vitest";
import { enablement, languagesToEnable, toggleAction, withLanguage } from "../src/enablement";

const on = { enable: true, disabledLanguages: [] as string[], languages: ["*"] };

describe("enablement", () => {
  it("is on everywhere by default", () => {
    expect(enablement(on, "python")).toEqual({ on: true });
    expect(enablement(on, undefined)).toEqual({ on: true });
  });

  it("the global switch wins over everything", () => {
    expect(enablement({ ...on, enable: false }, "python")).toEqual({ on: false, reason: "disabled" });
    expect(enablement({ ...on, enable: false }, undefined)).toEqual({ on: false, reason: "disabled" });
  });

  it("a disabled language is off, others stay on", () => {
    const s = { ...on, disabledLanguages: ["markdown"] };
    expect(enablement(s, "markdown")).toEqual({ on: false, reason: "language-disabled" });
    expect(enablement(s, "python")).toEqual({ on: true });
  });

  it("follows the languages allow-list", () => {
    const s = { ...on, languages: ["python"] };
    expect(enablement(s, "go")).toEqual({ on: false, reason: "language-not-listed" });
    expect(enablement(s, "python")).toEqual({ on: true });
  });
});

describe("switching", () => {
  it("withLanguage adds and removes, sorted and without duplicates", () => {
    expect(withLanguage(["go"], "python", false)).toEqual(["go", "python"]);
    expect(withLanguage(["go", "python"], "python", false)).toEqual(["go", "python"]);
    expect(withLanguage(["go", "python"], "python", true)).toEqual(["go"]);
  });

  it("enabling a language the allow-list leaves out adds it there", () => {
    expect(languagesToEnable(["python"], "go")).toEqual(["go", "python"]);
    expect(languagesToEnable(["*"], "go")).toBeUndefined();
    expect(languagesToEnable(["go"], "go")).toBeUndefined();
  });

  it("the status bar click switches back on what is off, else everything off", () => {
    expect(toggleAction({ on: true })).toEqual({ scope: "global", on: false });
    expect(toggleAction({ on: false, reason: "disabled" })).toEqual({ scope: "global", on: true });
    expect(toggleAction({ on: false, reason: "language-disabled" })).toEqual({ scope: "language", on: true });
    expect(toggleAction({ on: false, reason: "language-not-listed" })).toEqual({ scope: "language", on: true });
  });
});
