/** The status-bar item; what it shows is decided in status.ts. */
import * as vscode from "vscode";
import type { StatusView } from "./status";

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("codeloop.status", vscode.StatusBarAlignment.Right, 100);

  constructor() {
    this.item.name = "codeloop";
    this.item.show();
  }

  render(view: StatusView): void {
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.command = view.command;
    this.item.backgroundColor =
      view.severity === "ok" ? undefined : new vscode.ThemeColor(`statusBarItem.${view.severity}Background`);
  }

  dispose(): void {
    this.item.dispose();
  }
}
