/** Whether completions are on for a language, and the per-language switch. No `vscode` here. */
import type { Settings } from "./settings";

export type Enablement = { on: true } | { on: false; reason: "disabled" | "language-disabled" | "language-not-listed" };

export function enablement(s: Pick<Settings, "enable" | "disabledLanguages" | "languages">, languageId: string | undefined): Enablement {
  if (!s.enable) return { on: false, reason: "disabled" };
  if (languageId === undefined) return { on: true };
  if (s.disabledLanguages.includes(languageId)) return { on: false, reason: "language-disabled" };
  if (!s.languages.includes("*") && !s.languages.includes(languageId)) return { on: false, reason: "language-not-listed" };
  return { on: true };
}

/** The new `disabledLanguages` after switching `languageId` on or off (sorted, no duplicates). */
export function withLanguage(disabled: readonly string[], languageId: string, on: boolean): string[] {
  const set = new Set(disabled);
  if (on) set.delete(languageId);
  else set.add(languageId);
  return [...set].sort();
}

/**
 * The `languages` list to write when switching a language on that `languages` does not list
 * (the allow-list would keep it off), or undefined when it needs no change.
 */
export function languagesToEnable(languages: readonly string[], languageId: string): string[] | undefined {
  if (languages.includes("*") || languages.includes(languageId)) return undefined;
  return [...languages, languageId].sort();
}

/** What a click on the status bar does: switch back on what is off, else switch off everywhere. */
export function toggleAction(e: Enablement): { scope: "global" | "language"; on: boolean } {
  if (e.on) return { scope: "global", on: false };
  return e.reason === "disabled" ? { scope: "global", on: true } : { scope: "language", on: true };
}
