/**
 * A small stand-in for the `vscode` module (aliased in vitest.config.ts): just what the
 * extension touches, recording calls so tests can check the wiring.
 */
import { vi } from "vitest";

export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
}

export class Range {
  constructor(
    readonly start: Position,
    readonly end: Position,
  ) {}
}

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class Uri {
  private constructor(private readonly text: string) {}
  static parse(text: string): Uri {
    return new Uri(text);
  }
  toString(): string {
    return this.text;
  }
}

type Listener<T> = (e: T) => unknown;

export class EventEmitter<T> {
  private listeners: Listener<T>[] = [];
  event = (listener: Listener<T>) => {
    this.listeners.push(listener);
    return { dispose: () => (this.listeners = this.listeners.filter((l) => l !== listener)) };
  };
  fire(e: T): void {
    for (const l of [...this.listeners]) l(e);
  }
  dispose(): void {
    this.listeners = [];
  }
}

export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}

export enum LogLevel {
  Off = 0,
  Trace = 1,
  Debug = 2,
  Info = 3,
  Warning = 4,
  Error = 5,
}

export enum ConfigurationTarget {
  Global = 1,
  Workspace = 2,
  WorkspaceFolder = 3,
}

/** A text document over a string: offsets and positions as VS Code computes them. */
export class FakeDocument {
  version = 1;
  constructor(
    public text: string,
    readonly languageId = "python",
    readonly uri = Uri.parse("file:///work/app.py"),
  ) {}
  offsetAt(p: Position): number {
    const lines = this.text.split("\n");
    let offset = 0;
    for (let i = 0; i < p.line; i++) offset += lines[i].length + 1;
    return offset + p.character;
  }
  positionAt(offset: number): Position {
    const before = this.text.slice(0, offset).split("\n");
    return new Position(before.length - 1, before[before.length - 1].length);
  }
  getText(range?: Range): string {
    return range ? this.text.slice(this.offsetAt(range.start), this.offsetAt(range.end)) : this.text;
  }
}

export class FakeEditor {
  selection: { active: Position };
  constructor(readonly document: FakeDocument) {
    this.selection = { active: document.positionAt(document.text.length) };
  }
  /** Insert at the cursor and move it, as an accept does. */
  insert(text: string): void {
    const at = this.document.offsetAt(this.selection.active);
    this.document.text = this.document.text.slice(0, at) + text + this.document.text.slice(at);
    this.selection = { active: this.document.positionAt(at + text.length) };
  }
}

// --- recorded state ---------------------------------------------------------------------------
export const state = {
  config: {} as Record<string, unknown>,
  updates: [] as { key: string; value: unknown; target: unknown }[],
  commands: new Map<string, (...args: unknown[]) => unknown>(),
  executed: [] as { command: string; args: unknown[] }[],
  errors: [] as { message: string; actions: string[] }[],
  infos: [] as string[],
  opened: [] as string[],
  channels: [] as { name: string; show: ReturnType<typeof vi.fn>; lines: string[] }[],
  items: [] as { text: string; tooltip: unknown; command: unknown; backgroundColor: unknown; shown: boolean }[],
  errorChoice: undefined as string | undefined,
  /** Run by executeCommand for VS Code's own commands, e.g. to simulate an accept. */
  builtins: new Map<string, (...args: unknown[]) => unknown>(),
};

export const configChanged = new EventEmitter<{ affectsConfiguration(section: string): boolean }>();
export const editorChanged = new EventEmitter<unknown>();
export const documentClosed = new EventEmitter<FakeDocument>();

export function reset(): void {
  state.config = {};
  state.updates = [];
  state.commands.clear();
  state.executed = [];
  state.errors = [];
  state.infos = [];
  state.opened = [];
  state.channels = [];
  state.items = [];
  state.errorChoice = undefined;
  state.builtins.clear();
  window.activeTextEditor = undefined;
}

/** Change settings as a user would: the listeners hear about it. */
export function setConfig(values: Record<string, unknown>): void {
  Object.assign(state.config, values);
  configChanged.fire({ affectsConfiguration: (section: string) => section === "codeloop" });
}

function channel(name: string) {
  const c = { name, show: vi.fn(), lines: [] as string[] };
  state.channels.push(c);
  const write = (line: string) => void c.lines.push(line);
  return { ...c, logLevel: LogLevel.Info, info: write, warn: write, error: write, debug: write, trace: write, appendLine: write, append: write, dispose: vi.fn() };
}

export const window = {
  activeTextEditor: undefined as FakeEditor | undefined,
  createOutputChannel: (name: string) => channel(name),
  createStatusBarItem: () => {
    const item = { text: "", tooltip: undefined, command: undefined, backgroundColor: undefined, name: "", shown: false,
      show() { item.shown = true; }, dispose() {} };
    state.items.push(item);
    return item;
  },
  showErrorMessage: async (message: string, ...actions: string[]) => {
    state.errors.push({ message, actions });
    return state.errorChoice;
  },
  showInformationMessage: async (message: string) => {
    state.infos.push(message);
    return undefined;
  },
  showQuickPick: async () => undefined,
  onDidChangeActiveTextEditor: editorChanged.event,
};

export const workspace = {
  getConfiguration: (section: string) => ({
    get: (key: string, fallback?: unknown) => {
      const value = state.config[key];
      return value === undefined ? fallback : value;
    },
    update: async (key: string, value: unknown, target: unknown) => {
      state.updates.push({ key: `${section}.${key}`, value, target });
      setConfig({ [key]: value });
    },
  }),
  onDidChangeConfiguration: configChanged.event,
  onDidCloseTextDocument: documentClosed.event,
};

export const commands = {
  registerCommand: (id: string, run: (...args: unknown[]) => unknown) => {
    if (state.commands.has(id)) throw new Error(`command ${id} registered twice`);
    state.commands.set(id, run);
    return { dispose: () => state.commands.delete(id) };
  },
  executeCommand: async (command: string, ...args: unknown[]) => {
    state.executed.push({ command, args });
    const run = state.commands.get(command) ?? state.builtins.get(command);
    return run?.(...args);
  },
};

export const env = {
  openExternal: async (uri: Uri) => {
    state.opened.push(uri.toString());
    return true;
  },
};

export const languages = {
  getLanguages: async () => ["python", "typescript"],
};
