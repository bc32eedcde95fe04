/**
 * The status-bar item: what it says, its tooltip and what a click does, from the language
 * server's `codeloop/status` answer and the on/off state. No `vscode` here.
 */
import type { Enablement } from "./enablement";
import { COMMANDS } from "./protocol";

/** The answer to `codeloop/status` (lsp/status.py). */
export interface ServerStatus {
  serverUrl: string;
  reachable: boolean;
  /** The live adapter; "base" when none is live. */
  adapter: string | null;
  baseModel: string | null;
  /** The A/B experiment and arm of the last completion this user got, if any. */
  experiment: string | null;
  arm: string | null;
  /** Today's (UTC) acceptance for the adapter this user is served. */
  today: { adapter: string; shown: number; accepted: number; acceptanceRate: number | null } | null;
  error: string | null;
}

/** A `codeloop/status` answer, checked; undefined when it is not one (an older server). */
export function parseStatus(raw: unknown): ServerStatus | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" ? v : null);
  if (typeof r.serverUrl !== "string" || typeof r.reachable !== "boolean") return undefined;
  let today: ServerStatus["today"] = null;
  const t = r.today as Record<string, unknown> | null | undefined;
  if (t && typeof t === "object" && typeof t.shown === "number" && typeof t.accepted === "number") {
    today = {
      adapter: str(t.adapter) ?? "base",
      shown: t.shown,
      accepted: t.accepted,
      acceptanceRate: typeof t.acceptanceRate === "number" ? t.acceptanceRate : null,
    };
  }
  return {
    serverUrl: r.serverUrl,
    reachable: r.reachable,
    adapter: str(r.adapter),
    baseModel: str(r.baseModel),
    experiment: str(r.experiment),
    arm: str(r.arm),
    today,
    error: str(r.error),
  };
}

export type ClientState = "starting" | "running" | "failed" | "stopped";

export interface StatusInput {
  client: ClientState;
  /** Why the language server is not running (client "failed"). */
  failure?: string;
  /** For the active editor's language (or everywhere when there is none). */
  enablement: Enablement;
  languageId?: string;
  status?: ServerStatus;
}

export interface StatusView {
  text: string;
  tooltip: string;
  command: string;
  /** "error" and "warning" colour the item's background. */
  severity: "ok" | "warning" | "error";
}

export function formatRate(rate: number | null | undefined): string {
  return rate === null || rate === undefined ? "–" : `${Math.round(rate * 100)} %`;
}

export function statusView(input: StatusInput): StatusView {
  const { client, enablement, status, languageId } = input;
  if (client === "failed") {
    return {
      text: "$(error) codeloop",
      tooltip: `codeloop: the language server is not running.\n${input.failure ?? ""}\nClick to show the log.`.replace("\n\n", "\n"),
      command: COMMANDS.showLog,
      severity: "error",
    };
  }
  const toggle = enablement.on ? "Click to turn completions off." : "Click to turn completions on.";
  if (!enablement.on) {
    const where =
      enablement.reason === "disabled" ? "" : ` for ${languageId ?? "this language"}`;
    const why =
      enablement.reason === "language-not-listed"
        ? `${languageId} is not in "codeloop.languages".`
        : `Completions are off${where}.`;
    return { text: `$(circle-slash) codeloop off${where}`, tooltip: `codeloop: ${why}\n${toggle}`, command: COMMANDS.toggle, severity: "ok" };
  }
  if (client === "starting" || client === "stopped" || status === undefined) {
    const what = client === "stopped" ? "stopped" : "starting…";
    return { text: "$(sync~spin) codeloop", tooltip: `codeloop: language server ${what}\n${toggle}`, command: COMMANDS.toggle, severity: "ok" };
  }
  if (!status.reachable) {
    return {
      text: "$(warning) codeloop",
      tooltip: `codeloop: ${status.error ?? `completion server unavailable at ${status.serverUrl}`}\nIs \`codeloop serve\` running? Check "codeloop.serverUrl".\n${toggle}`,
      command: COMMANDS.toggle,
      severity: "warning",
    };
  }
  const adapter = status.adapter ?? "base";
  const arm = status.experiment && status.arm ? ` · A/B ${status.arm}` : "";
  const today = status.today;
  const text = `$(sparkle) ${adapter}${arm} · ${formatRate(today?.acceptanceRate)}`;
  const lines = [
    `codeloop: completions on${languageId ? ` for ${languageId}` : ""}`,
    `Live adapter: ${adapter === "base" ? `none (base model${status.baseModel ? ` ${status.baseModel}` : ""})` : adapter}`,
  ];
  if (status.experiment) lines.push(`Experiment ${status.experiment}: your arm is ${status.arm ?? "?"}`);
  if (today) {
    lines.push(
      today.shown
        ? `Today (${today.adapter}): ${formatRate(today.acceptanceRate)} accepted (${today.accepted} of ${today.shown} shown)`
        : `Today (${today.adapter}): no suggestions shown yet`,
    );
  } else if (status.error) {
    lines.push(status.error);
  }
  lines.push(`Server: ${status.serverUrl}`, toggle);
  return { text, tooltip: lines.join("\n"), command: COMMANDS.toggle, severity: "ok" };
}
