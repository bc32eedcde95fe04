/** Entry point: wires settings, the language-server session, the status bar and the commands. */
import * as vscode from "vscode";
import { SECTION, commandHandlers } from "./commands";
import { enablement } from "./enablement";
import { Session } from "./session";
import { type Settings, readSettings } from "./settings";
import { statusView } from "./status";
import { StatusBar } from "./statusBar";

let session: Session | undefined;

function currentSettings(): Settings {
  const config = vscode.workspace.getConfiguration(SECTION);
  return readSettings((key) => config.get(key));
}

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel("codeloop", { log: true });
  const trace = vscode.window.createOutputChannel("codeloop: protocol trace", { log: true });
  const bar = new StatusBar();
  const notify = (message: string, ...actions: string[]) => {
    void vscode.window.showErrorMessage(message, ...actions).then((choice) => {
      if (choice === "Show log") log.show();
      else if (choice === "Open settings") void vscode.commands.executeCommand("workbench.action.openSettings", "codeloop.path");
      else if (choice === "Restart") void session?.restart();
    });
  };
  const active = new Session(currentSettings(), log, trace, notify);
  session = active;

  const render = () => {
    const { state, failure, status, settings } = active.current;
    const languageId = vscode.window.activeTextEditor?.document.languageId;
    bar.render(statusView({ client: state, failure, status, languageId, enablement: enablement(settings, languageId) }));
  };

  context.subscriptions.push(
    log,
    trace,
    bar,
    active,
    active.onDidChange(render),
    ...Object.entries(commandHandlers(active, log, trace)).map(([id, run]) => vscode.commands.registerCommand(id, run)),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration(SECTION)) void active.configure(currentSettings());
    }),
    vscode.window.onDidChangeActiveTextEditor(render),
    vscode.workspace.onDidCloseTextDocument((doc) => active.suggestions.forget(doc.uri.toString())),
  );
  render();
  void active.start(); // failures are shown by the session, with what to do
}

export async function deactivate(): Promise<void> {
  await session?.stop();
  session = undefined;
}
