/** Starting `codeloop lsp`, and what to tell the user when it will not run. No `vscode` here. */

export interface ServerCommand {
  command: string;
  args: string[];
}

/** `codeloop lsp` over stdio; `path` is the codeloop executable (setting "codeloop.path"). */
export function serverCommand(path: string): ServerCommand {
  return { command: path, args: ["lsp"] };
}

/** The notification shown when `codeloop lsp` cannot be started: what happened, what to do. */
export function startFailureMessage(path: string, error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  if (/ENOENT/.test(text)) {
    return (
      `codeloop: cannot start the language server: "${path}" was not found. ` +
      `Set "codeloop.path" to the full path of the codeloop executable ` +
      `(in a codeloop checkout, \`make install\` creates .venv/bin/codeloop), or put codeloop on the PATH.`
    );
  }
  if (/EACCES/.test(text)) {
    return `codeloop: cannot start the language server: "${path}" is not executable. Point "codeloop.path" at the codeloop executable.`;
  }
  return `codeloop: the language server ("${path} lsp") did not start: ${firstLine(text)}. The log says more.`;
}

/** The notification shown when the language server keeps exiting. */
export function crashMessage(path: string, crashes: number, minutes: number): string {
  return (
    `codeloop: the language server ("${path} lsp") stopped ${crashes} times in ${minutes} minutes and will not be restarted. ` +
    `The log shows why; fix it, then run "codeloop: Restart language server".`
  );
}

function firstLine(text: string): string {
  return (text.split("\n").find((l) => l.trim()) ?? text).trim().slice(0, 300);
}

/** Restart a crashed server, but not in a loop: at most `limit` crashes within `windowMs`. */
export class CrashPolicy {
  private crashes: number[] = [];

  constructor(
    readonly limit = 4,
    readonly windowMs = 3 * 60_000,
  ) {}

  /** Record a crash at `now`; true when the server should be restarted. */
  crashed(now: number): boolean {
    this.crashes = this.crashes.filter((t) => now - t < this.windowMs);
    this.crashes.push(now);
    return this.crashes.length <= this.limit;
  }

  get count(): number {
    return this.crashes.length;
  }

  reset(): void {
    this.crashes = [];
  }
}
