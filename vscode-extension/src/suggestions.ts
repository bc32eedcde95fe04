/**
 * The suggestions the server returned, per document, so that a partial accept (next word,
 * next line) can be reported with its length and Escape with the suggestion's id.
 * No `vscode` here: offsets and strings only.
 */
import { ACCEPT } from "./protocol";

export interface Shown {
  id: string;
  uri: string;
  /** Offsets of the range the item replaces (start..end) when it was returned. */
  start: number;
  end: number;
  insertText: string;
  /**
   * Characters of the suggestion before `insertText`: the server answers a user typing the
   * suggestion's next characters with the rest of the same suggestion, and counts accepted
   * characters from the suggestion's start.
   */
  skipped: number;
}

/** An item the way the language client hands it over, reduced to what matters here. */
export interface ItemLike {
  insertText: string | { value: string };
  command?: { command: string; arguments?: unknown[] };
}

/** The completion id of one of our items (its accept command's first argument). */
export function completionId(item: ItemLike): string | undefined {
  const id = item.command?.command === ACCEPT ? item.command.arguments?.[0] : undefined;
  return typeof id === "string" ? id : undefined;
}

const REMEMBERED = 500; // suggestions whose full length is kept (for typed-ahead answers)

export class Suggestions {
  private visible = new Map<string, Shown>();
  private fullLength = new Map<string, number>();

  /** The server returned `item` for `uri`, replacing [start, end). */
  shown(uri: string, id: string, start: number, end: number, insertText: string): Shown {
    const full = Math.max(this.fullLength.get(id) ?? 0, insertText.length);
    this.fullLength.delete(id);
    this.fullLength.set(id, full);
    while (this.fullLength.size > REMEMBERED) this.fullLength.delete(this.fullLength.keys().next().value as string);
    const item = { id, uri, start, end, insertText, skipped: full - insertText.length };
    this.visible.set(uri, item);
    return item;
  }

  /** The last suggestion returned for `uri`, if it was not accepted or dismissed since. */
  current(uri: string): Shown | undefined {
    return this.visible.get(uri);
  }

  /** Accepted, dismissed or its document closed: it is no longer on screen. */
  forget(uri: string, id?: string): void {
    const item = this.visible.get(uri);
    if (item && (id === undefined || item.id === id)) this.visible.delete(uri);
  }

  clear(): void {
    this.visible.clear();
  }

  /** Forget it wherever it is (the accept command knows the id only). */
  forgetId(id: string): void {
    for (const [uri, item] of this.visible) if (item.id === id) this.visible.delete(uri);
  }
}

/**
 * Characters of the suggestion accepted by a partial accept, counted from the suggestion's
 * start as the server counts them. `before` and `after` are the document's text from the
 * item's start to the cursor before and after VS Code's accept-next-word/line command.
 * Undefined when that command did not accept part of this item: nothing was inserted,
 * something else was, or all of it was (VS Code then runs the item's command, which reports
 * the full accept).
 */
export function partiallyAccepted(item: Shown, before: string, after: string): number | undefined {
  if (after.length <= before.length || after.length >= item.insertText.length || !item.insertText.startsWith(after)) return undefined;
  return item.skipped + after.length;
}
