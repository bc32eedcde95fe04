/** The language client for `codeloop lsp`: how it is started and where its middleware hooks in. */
import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
} from "vscode-languageclient/node";
import { serverCommand } from "./launch";

export interface ClientHooks {
  /** The extension's on/off switch for this document; off: the server is not asked. */
  inlineAllowed(document: vscode.TextDocument): boolean;
  /** The server answered an inline-completion request with these items. */
  shown(document: vscode.TextDocument, position: vscode.Position, items: readonly vscode.InlineCompletionItem[]): void;
  /** A server command ran (codeloop.accept, codeloop.dismiss). */
  commandRan(command: string, args: readonly unknown[]): void;
  /** The server process exited unexpectedly; return true to restart it. */
  crashed(): boolean;
  initializationOptions(): Record<string, unknown>;
}

/** Our notifications say what to do; the library's own pop-ups would only repeat them. */
class CodeloopClient extends LanguageClient {
  override error(message: string, data?: unknown, _showNotification?: boolean | "force"): void {
    super.error(message, data, false);
  }
}

export function createClient(path: string, log: vscode.LogOutputChannel, trace: vscode.LogOutputChannel, hooks: ClientHooks): LanguageClient {
  const { command, args } = serverCommand(path);
  // stdio without `transport`: TransportKind.stdio would append "--stdio", which `codeloop lsp` refuses.
  const server: ServerOptions = { command, args };
  const options: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: log,
    traceOutputChannel: trace,
    initializationOptions: () => hooks.initializationOptions(),
    middleware: {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!hooks.inlineAllowed(document)) return null;
        const result = await next(document, position, context, token);
        hooks.shown(document, position, result ? (Array.isArray(result) ? result : result.items) : []);
        return result;
      },
      // The server's plain completion item is for editors without ghost text; in VS Code it
      // would repeat the ghost text in the suggest widget.
      provideCompletionItem: () => null,
      executeCommand: async (command, args, next) => {
        const result = await next(command, args);
        hooks.commandRan(command, args);
        return result;
      },
    },
    errorHandler: {
      error: (_error, _message, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown, handled: true }),
      closed: () => ({ action: hooks.crashed() ? CloseAction.Restart : CloseAction.DoNotRestart, handled: true }),
    },
  };
  return new CodeloopClient("codeloop", "codeloop", server, options);
}
