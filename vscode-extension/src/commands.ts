/** The extension's commands (ids in protocol.ts and package.json); the decisions they take live in enablement.ts and suggestions.ts. */
import * as vscode from "vscode";
import { enablement, languagesToEnable, toggleAction, withLanguage } from "./enablement";
import { COMMANDS, VSCODE } from "./protocol";
import type { Session } from "./session";
import type { Settings } from "./settings";
import { type Shown, partiallyAccepted } from "./suggestions";

export const SECTION = "codeloop";
const DEFAULT_SERVER_URL = "http://127.0.0.1:8000";

type Handler = () => unknown;

export function commandHandlers(session: Session, log: vscode.LogOutputChannel, trace: vscode.LogOutputChannel): Record<string, Handler> {
  const settings = () => session.current.settings;
  const activeLanguage = () => vscode.window.activeTextEditor?.document.languageId;
  const update = (key: keyof Settings, value: unknown) =>
    vscode.workspace.getConfiguration(SECTION).update(key, value, vscode.ConfigurationTarget.Global);

  const setLanguage = async (on: boolean) => {
    const languageId = activeLanguage() ?? (await vscode.window.showQuickPick(await vscode.languages.getLanguages(), { placeHolder: "Language" }));
    if (!languageId) return;
    const s = settings();
    await update("disabledLanguages", withLanguage(s.disabledLanguages, languageId, on));
    const languages = on ? languagesToEnable(s.languages, languageId) : undefined;
    if (languages) await update("languages", languages);
    if (on && !s.enable) await update("enable", true);
  };

  // Partial accepts: VS Code's own command does the edit; the length is read from the document.
  const acceptPart = async (builtin: string) => {
    const editor = vscode.window.activeTextEditor;
    const item = editor && session.suggestions.current(editor.document.uri.toString());
    if (!editor || !item) {
      await vscode.commands.executeCommand(builtin);
      return;
    }
    const before = textUpToCursor(editor, item);
    await vscode.commands.executeCommand(builtin);
    const chars = partiallyAccepted(item, before, textUpToCursor(editor, item));
    if (chars !== undefined) await session.accept(item.id, chars);
  };

  const dismiss = async () => {
    const editor = vscode.window.activeTextEditor;
    const item = editor && session.suggestions.current(editor.document.uri.toString());
    await vscode.commands.executeCommand(VSCODE.hide);
    if (item) await session.dismiss(item.id);
  };

  const trigger = async () => {
    const languageId = activeLanguage();
    if (!enablement(settings(), languageId).on) {
      void vscode.window.showInformationMessage(`codeloop is off for ${languageId ?? "this editor"}: click the status bar item to turn it on.`);
      return;
    }
    await vscode.commands.executeCommand(VSCODE.trigger);
  };

  // vscode-languageclient 10 writes the trace while the trace channel's log level is Trace;
  // "codeloop.trace.server" only says how much of each message.
  const showTrace = async () => {
    trace.show(true);
    if (trace.logLevel === vscode.LogLevel.Trace) return;
    const choice = await vscode.window.showInformationMessage(
      'codeloop: the protocol trace is written while the "codeloop: protocol trace" channel\'s log level is Trace ' +
        "(Developer: Set Log Level…, or the output view's log level menu).",
      "Set log level",
    );
    if (choice === "Set log level") await vscode.commands.executeCommand("workbench.action.setLogLevel");
  };

  return {
    [COMMANDS.toggle]: async () => {
      const action = toggleAction(enablement(settings(), activeLanguage()));
      if (action.scope === "global") await update("enable", action.on);
      else await setLanguage(true);
    },
    [COMMANDS.enable]: () => update("enable", true),
    [COMMANDS.disable]: () => update("enable", false),
    [COMMANDS.enableLanguage]: () => setLanguage(true),
    [COMMANDS.disableLanguage]: () => setLanguage(false),
    [COMMANDS.trigger]: trigger,
    [COMMANDS.openDashboard]: () => {
      const url = session.current.status?.serverUrl || settings().serverUrl || DEFAULT_SERVER_URL;
      return vscode.env.openExternal(vscode.Uri.parse(`${url}/`));
    },
    [COMMANDS.showLog]: () => log.show(),
    [COMMANDS.showTrace]: showTrace,
    [COMMANDS.restart]: () => session.restart(),
    [COMMANDS.acceptNextWord]: () => acceptPart(VSCODE.acceptNextWord),
    [COMMANDS.acceptNextLine]: () => acceptPart(VSCODE.acceptNextLine),
    [COMMANDS.dismissSuggestion]: dismiss,
  };
}

function textUpToCursor(editor: vscode.TextEditor, item: Shown): string {
  const doc = editor.document;
  const cursor = editor.selection.active;
  return doc.offsetAt(cursor) > item.start ? doc.getText(new vscode.Range(doc.positionAt(item.start), cursor)) : "";
}
