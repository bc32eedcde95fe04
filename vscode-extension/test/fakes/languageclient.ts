/** A stand-in for `vscode-languageclient/node`: records what the extension asks of it. */
import * as vscode from "vscode";
import { EventEmitter } from "./vscode";

export enum State {
  Stopped = 1,
  Running = 2,
  Starting = 3,
}
export enum CloseAction {
  DoNotRestart = 1,
  Restart = 2,
}
export enum ErrorAction {
  Continue = 1,
  Shutdown = 2,
}
export const DidChangeConfigurationNotification = { type: { method: "workspace/didChangeConfiguration" } };

export const behaviour = {
  startError: undefined as Error | undefined,
  status: undefined as unknown,
};
export const clients: LanguageClient[] = [];

export class LanguageClient {
  state = State.Stopped;
  readonly requests: { method: string; params: unknown }[] = [];
  readonly notifications: { method: string; params: unknown }[] = [];
  /** Server commands that reached the server (after the middleware). */
  readonly serverCommands: { command: string; args: unknown[] }[] = [];
  readonly logged: string[] = [];
  private readonly changed = new EventEmitter<{ oldState: State; newState: State }>();
  readonly onDidChangeState = this.changed.event;
  private registered: { dispose(): void }[] = [];

  constructor(
    readonly id: string,
    readonly name: string,
    readonly serverOptions: { command: string; args: string[] },
    readonly clientOptions: any,
  ) {
    clients.push(this);
  }

  error(message: string): void {
    this.logged.push(message);
  }

  async start(): Promise<void> {
    this.setState(State.Starting);
    if (behaviour.startError) {
      this.setState(State.Stopped);
      throw behaviour.startError;
    }
    // As the real client does for the server's executeCommandProvider.commands.
    for (const command of ["codeloop.accept", "codeloop.dismiss"]) {
      this.registered.push(
        vscode.commands.registerCommand(command, (...args: unknown[]) => {
          const next = async (c: string, a: unknown[]) => void this.serverCommands.push({ command: c, args: a });
          const middleware = this.clientOptions.middleware?.executeCommand;
          return middleware ? middleware(command, args, next) : next(command, args);
        }),
      );
    }
    this.setState(State.Running);
  }

  async stop(): Promise<void> {
    for (const r of this.registered) r.dispose();
    this.registered = [];
    this.setState(State.Stopped);
  }

  async sendRequest(method: string, params: unknown): Promise<unknown> {
    this.requests.push({ method, params });
    return behaviour.status;
  }

  async sendNotification(type: { method: string }, params: unknown): Promise<void> {
    this.notifications.push({ method: type.method, params });
  }

  private setState(newState: State): void {
    const oldState = this.state;
    this.state = newState;
    this.changed.fire({ oldState, newState });
  }
}
