// A plain Node LSP client (vscode-languageserver-protocol over the child's stdio) driving
// `codeloop lsp` the way an editor does. Run by tests/lsp/test_editors.py:
//
//   CODELOOP_PYTHON=... CODELOOP_SERVER_URL=... CODELOOP_LSP_DATA=... CODELOOP_RESULT=... \
//     node --test tests/lsp/clients/node/lsp_client.test.mjs
//
// CODELOOP_PYTHON runs `-m codeloop.cli lsp`; CODELOOP_LSP_DATA is a scratch folder (the
// language server's data dir and the document's folder); the completion id and what was
// sent are written to CODELOOP_RESULT as JSON for the pytest side to find in DuckDB.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import protocol from "vscode-languageserver-protocol/node.js";

const {
  createProtocolConnection, StreamMessageReader, StreamMessageWriter, ErrorCodes, ResponseError,
  InitializeRequest, InitializedNotification, DidOpenTextDocumentNotification, DidChangeTextDocumentNotification,
  InlineCompletionRequest, ExecuteCommandRequest, ShutdownRequest, ExitNotification,
} = protocol;

// The same fast settings as the Python LSP tests (tests/lsp/conftest.py FAST).
const OPTIONS = { debounceMs: 0, eventFlushMs: 20, maxTokens: 16, timeoutMs: 60000, retentionSeconds: [1, 2] };
// LSP 3.18 (what the server's lsprotocol implements): Invoked = 1, Automatic = 2. This
// package's 3.17.x still has the proposed values (InlineCompletionTriggerKind.Invoked = 0,
// Automatic = 1), which the server rejects (0) or reads as Invoked (1), so the number is sent.
const INVOKED = 1;

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set`);
  return value;
}

/** A promise that rejects after `ms` (the test fails with `what`, never hangs). */
function within(ms, promise, what) {
  let timer;
  const limit = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms); });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

test("codeloop lsp over stdio: inline completion, accept, invalid position", { timeout: 180_000 }, async () => {
  const python = need("CODELOOP_PYTHON");
  const serverUrl = need("CODELOOP_SERVER_URL");
  const data = need("CODELOOP_LSP_DATA");
  const resultPath = need("CODELOOP_RESULT");
  mkdirSync(data, { recursive: true });

  const child = spawn(python, ["-m", "codeloop.cli", "lsp", "--server", serverUrl], {
    env: { ...process.env, CODELOOP_DATA_DIR: data, CODELOOP_CONFIG: "/dev/null", CODELOOP_LOG_LEVEL: "info" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => { stderr += chunk; });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const connection = createProtocolConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
  const messages = [];
  connection.onNotification("window/showMessage", (params) => messages.push(params));
  connection.onNotification("window/logMessage", () => {});
  connection.listen();

  try {
    const init = await within(60_000, connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      clientInfo: { name: "node-lsp-test" },
      rootUri: pathToFileURL(data).href,
      capabilities: {
        general: { positionEncodings: ["utf-16"] },
        textDocument: {
          synchronization: { dynamicRegistration: false },
          inlineCompletion: { dynamicRegistration: false },
        },
        workspace: { executeCommand: { dynamicRegistration: false } },
      },
      initializationOptions: OPTIONS,
    }), "initialize");
    assert.ok(init.capabilities.inlineCompletionProvider, `no inlineCompletionProvider: ${JSON.stringify(init.capabilities)}`);
    assert.equal(init.capabilities.textDocumentSync?.change, 2, "incremental sync expected");
    await connection.sendNotification(InitializedNotification.type, {});

    const filepath = join(data, "node_example.py");
    const uri = pathToFileURL(filepath).href;
    const lines = [
      "import math",
      "",
      "",
      "def circle_area(radius):",
      '    """Return the area of a circle of the given radius."""',
      "    return",
    ];
    const text = lines.join("\n");
    await connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: "python", version: 1, text },
    });

    const position = { line: lines.length - 1, character: lines[lines.length - 1].length };
    const list = await within(90_000, connection.sendRequest(InlineCompletionRequest.type, {
      textDocument: { uri }, position, context: { triggerKind: INVOKED },
    }), "textDocument/inlineCompletion");
    const items = Array.isArray(list) ? list : list?.items;
    assert.ok(items && items.length >= 1, `no inline item: ${JSON.stringify(list)}`);
    const item = items[0];
    assert.equal(typeof item.insertText, "string");
    assert.ok(item.insertText.length > 0, "empty insertText");
    assert.deepEqual(item.range, { start: position, end: position });
    assert.equal(item.command?.command, "codeloop.accept");
    const [completionId] = item.command.arguments;
    assert.equal(typeof completionId, "string");
    assert.ok(completionId.length > 0);

    // Accept as an editor does: insert the text (incremental didChange), then run the command.
    await connection.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri, version: 2 },
      contentChanges: [{ range: item.range, text: item.insertText }],
    });
    const accepted = await within(30_000, connection.sendRequest(ExecuteCommandRequest.type, {
      command: item.command.command, arguments: item.command.arguments,
    }), "workspace/executeCommand");
    assert.equal(accepted, true);

    // A position past the end of the document is the client's mistake: InvalidParams, not a hang.
    const beyond = { line: lines.length + 5, character: 0 };
    await assert.rejects(
      within(30_000, connection.sendRequest(InlineCompletionRequest.type, {
        textDocument: { uri }, position: beyond, context: { triggerKind: INVOKED },
      }), "inlineCompletion past the end"),
      (err) => {
        assert.ok(err instanceof ResponseError, `expected a ResponseError, got ${err}`);
        assert.equal(err.code, ErrorCodes.InvalidParams);
        return true;
      },
    );

    writeFileSync(resultPath, JSON.stringify({
      completionId, filepath, uri, insertText: item.insertText, messages,
    }));

    // Shutdown sends the last events; then the process must exit cleanly.
    await within(30_000, connection.sendRequest(ShutdownRequest.type), "shutdown");
    await connection.sendNotification(ExitNotification.type);
    const { code, signal } = await within(30_000, exited, "exit after shutdown");
    assert.equal(code, 0, `codeloop lsp exited with ${code} (${signal}):\n${stderr.slice(-3000)}`);
  } catch (err) {
    err.message += `\n--- codeloop lsp stderr (tail) ---\n${stderr.slice(-3000)}`;
    throw err;
  } finally {
    connection.dispose();
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});
