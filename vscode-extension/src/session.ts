/**
 * One language-server session: starts and restarts `codeloop lsp`, tells it new settings,
 * remembers the suggestions it returned and asks it for the status bar's figures.
 */
import * as vscode from "vscode";
import { DidChangeConfigurationNotification, type LanguageClient, State } from "vscode-languageclient/node";
import { createClient } from "./client";
import { enablement } from "./enablement";
import { CrashPolicy, crashMessage, startFailureMessage } from "./launch";
import { ACCEPT, DISMISS, STATUS_REQUEST } from "./protocol";
import { type Settings, restartReason, serverOptions, serverOptionsChanged } from "./settings";
import { type ClientState, type ServerStatus, parseStatus } from "./status";
import { Suggestions, completionId } from "./suggestions";

const STATUS_EVERY_MS = 60_000;
// Accept events reach the server after the language server's batching (eventFlushMs, 1 s).
const STATUS_AFTER_ACCEPT_MS = 2_500;

export class Session implements vscode.Disposable {
  readonly suggestions = new Suggestions();
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChange = this.changed.event;
  private client: LanguageClient | undefined;
  private state: ClientState = "stopped";
  private failure: string | undefined;
  private status: ServerStatus | undefined;
  private readonly crashes = new CrashPolicy();
  private readonly timer = setInterval(() => void this.refreshStatus(), STATUS_EVERY_MS);
  private soon: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private settings: Settings,
    private readonly log: vscode.LogOutputChannel,
    private readonly trace: vscode.LogOutputChannel,
    private readonly notify: (message: string, ...actions: string[]) => void,
  ) {}

  get current(): { state: ClientState; failure?: string; status?: ServerStatus; settings: Settings } {
    return { state: this.state, failure: this.failure, status: this.status, settings: this.settings };
  }

  async start(): Promise<void> {
    const path = this.settings.path;
    const client = createClient(path, this.log, this.trace, {
      inlineAllowed: (doc) => enablement(this.settings, doc.languageId).on,
      shown: (doc, position, items) => this.shown(doc, position, items),
      commandRan: (command, args) => this.commandRan(command, args),
      crashed: () => this.crashed(path),
      initializationOptions: () => serverOptions(this.settings),
    });
    this.client = client;
    client.onDidChangeState((e) => {
      if (client !== this.client) return;
      if (e.newState === State.Running) {
        this.setState("running");
        void this.refreshStatus();
      } else if (e.newState === State.Stopped && this.state !== "failed") {
        this.setState("stopped");
      }
    });
    this.failure = undefined;
    this.setState("starting");
    this.log.info(`starting ${path} lsp`);
    try {
      await client.start();
    } catch (error) {
      if (client !== this.client) return;
      this.fail(startFailureMessage(path, error), "Open settings");
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.status = undefined;
    this.suggestions.clear();
    this.setState("stopped");
    if (client && client.state !== State.Stopped) {
      await client.stop(5_000).catch((error) => this.log.warn(`stopping the language server: ${error}`));
    }
  }

  async restart(): Promise<void> {
    this.crashes.reset();
    await this.stop();
    await this.start();
  }

  /** New settings: tell the running server, or restart it when telling is not enough. */
  async configure(settings: Settings): Promise<void> {
    const before = this.settings;
    this.settings = settings;
    const reason = restartReason(before, settings);
    if (reason) {
      this.log.info(`restarting the language server: ${reason}`);
      await this.restart();
    } else if (serverOptionsChanged(before, settings) && this.client && this.state === "running") {
      await this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: serverOptions(settings) });
      this.refreshSoon(500);
    }
    this.changed.fire();
  }

  async refreshStatus(): Promise<void> {
    if (!this.client || this.state !== "running") return;
    try {
      const status = parseStatus(await this.client.sendRequest(STATUS_REQUEST, {}));
      if (status === undefined) this.log.warn(`${STATUS_REQUEST}: unexpected answer (is codeloop older than this extension?)`);
      this.status = status;
    } catch (error) {
      this.log.warn(`${STATUS_REQUEST} failed: ${error}`);
    }
    this.changed.fire();
  }

  /** Report part of a suggestion accepted (the item's own command reports full accepts). */
  async accept(id: string, acceptedChars: number): Promise<void> {
    await this.runServerCommand(ACCEPT, id, acceptedChars);
  }

  async dismiss(id: string): Promise<void> {
    await this.runServerCommand(DISMISS, id);
  }

  dispose(): void {
    clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.changed.dispose();
    void this.stop();
  }

  private async runServerCommand(command: string, ...args: unknown[]): Promise<void> {
    if (!this.client || this.state !== "running") return;
    // Through VS Code's command (registered by the client), so the middleware sees it too.
    await Promise.resolve(vscode.commands.executeCommand(command, ...args)).catch((error) => this.log.warn(`${command} failed: ${error}`));
  }

  private shown(doc: vscode.TextDocument, position: vscode.Position, items: readonly vscode.InlineCompletionItem[]): void {
    const uri = doc.uri.toString();
    const item = items[0];
    const id = item && completionId(item);
    if (!item || !id || typeof item.insertText !== "string") {
      this.suggestions.forget(uri);
      return;
    }
    const range = item.range ?? new vscode.Range(position, position);
    this.suggestions.shown(uri, id, doc.offsetAt(range.start), doc.offsetAt(range.end), item.insertText);
  }

  private commandRan(command: string, args: readonly unknown[]): void {
    if ((command === ACCEPT || command === DISMISS) && typeof args[0] === "string") {
      this.suggestions.forgetId(args[0]);
      if (command === ACCEPT) this.refreshSoon(STATUS_AFTER_ACCEPT_MS);
    }
  }

  private crashed(path: string): boolean {
    const restart = this.crashes.crashed(Date.now());
    this.log.warn(`the language server exited${restart ? "; restarting it" : ""}`);
    if (!restart) this.fail(crashMessage(path, this.crashes.count, this.crashes.windowMs / 60_000), "Restart");
    return restart;
  }

  private fail(message: string, ...actions: string[]): void {
    this.failure = message;
    this.status = undefined;
    this.log.error(message);
    this.setState("failed");
    this.notify(message, "Show log", ...actions);
  }

  private refreshSoon(ms: number): void {
    if (this.soon) clearTimeout(this.soon);
    this.soon = setTimeout(() => void this.refreshStatus(), ms);
  }

  private setState(state: ClientState): void {
    this.state = state;
    void vscode.commands.executeCommand("setContext", "codeloop.running", state === "running");
    this.changed.fire();
  }
}
