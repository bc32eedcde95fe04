"""Repository context end to end: `codeloop lsp` as a real process over stdio sends the other
open document's code and the imported file's as `segments.snippets`, and the real server
puts them in the model's prompt.

What the language server sends is read off the wire by a small real HTTP server in this test
process that records every request body (and, for the real server, forwards it and records
the answer): nothing in the language server is replaced."""
from __future__ import annotations

import itertools
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from lsprotocol import types

from tests.conftest import send_json
from tests.lsp.conftest import inline, lsp_session, open_doc, stats, wait_for_outcome

INVENTORY = '''class StockKeeper:
    """Counts what the warehouse holds; reorders below the threshold."""

    def reserve_parcel(self, warehouse_code, parcel_weight):
        if self.shelf_count(warehouse_code) < self.reorder_threshold:
            self.reorder(warehouse_code)
        return self.shelves[warehouse_code].take(parcel_weight)
'''
LEDGER = '''class InvoiceLedger:
    def add_line(self, invoice_number, amount_due):
        # refunds are booked as negative amount_due lines
        self.lines.append((invoice_number, amount_due))
'''
BILLING = '''from accounts.ledger import InvoiceLedger


def ship_and_bill(keeper, ledger: InvoiceLedger, warehouse_code, parcel_weight, invoice_number, amount_due):
    parcel = keeper.reserve_parcel(warehouse_code, parcel_weight)
    ledger.add_line(invoice_number, amount_due)
    return '''
CURSOR = (6, 11)


class Recorder(ThreadingHTTPServer):
    """A real HTTP server on a free port: records each POST /v1/completions body; forwards
    every request to `upstream` when given, else answers as a completion server would."""

    def __init__(self, upstream: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.completions: list[tuple[dict, int, dict]] = []  # (request body, status, answer)
        self.ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        self._answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null"))

    def _answer(self, body) -> None:
        if self.server.upstream:
            resp = httpx.request(self.command, self.server.upstream + self.path, json=body, timeout=120)
            status, answer = resp.status_code, resp.json()
        elif self.path == "/v1/completions":
            status, answer = 200, {"id": f"cmpl-rec-{next(self.server.ids)}", "choices": [{"text": "parcel", "index": 0}]}
        elif self.path == "/v1/events":
            status, answer = 200, {"stored": len(body["events"])}
        else:
            status, answer = 200, {"status": "ok", "max_tokens_limit": 512}
        if self.path == "/v1/completions":
            self.server.completions.append((body, status, answer))
        send_json(self, status, answer)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def recorder(upstream: str | None = None):
    server = Recorder(upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def dismiss(client, result) -> None:
    assert result.items, "no suggestion"
    await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.dismiss", result.items[0].command.arguments[:1]))


def workspace(tmp_path: Path) -> Path:
    """A workspace folder whose accounts/ledger.py is on disk (imported, never opened)."""
    root = tmp_path / "shop"
    (root / "accounts").mkdir(parents=True)
    (root / "accounts" / "__init__.py").write_text("")
    (root / "accounts" / "ledger.py").write_text(LEDGER)
    return root


async def test_the_other_open_document_and_the_imported_file_are_sent_as_snippets(lsp_data, tmp_path):
    root = workspace(tmp_path)
    billing, inventory = (root / "billing.py").as_uri(), (root / "stock" / "inventory.py").as_uri()
    with recorder() as rec:
        async with lsp_session(rec.url, lsp_data, workspace=root) as client:
            open_doc(client, inventory, INVENTORY)
            open_doc(client, billing, BILLING)
            first = await inline(client, billing, *CURSOR)
            sent = rec.completions[-1][0]["segments"]
            snippets = {s["filepath"]: s["text"] for s in sent["snippets"]}
            assert set(snippets) == {"stock/inventory.py", "accounts/ledger.py"}  # relative to the workspace folder
            assert snippets["stock/inventory.py"] in INVENTORY and "def reserve_parcel" in snippets["stock/inventory.py"]
            assert snippets["accounts/ledger.py"] in LEDGER and "refunds are booked" in snippets["accounts/ledger.py"]
            assert sum(map(len, snippets.values())) <= 1500 and sent["prefix"] == BILLING

            # The same prompt and context: the cache answers. Other context: a new request.
            # (Each suggestion is dismissed first, or typing ahead would answer from it.)
            await dismiss(client, first)
            second = await inline(client, billing, *CURSOR)
            assert (await stats(client)).cache_hits == 1 and len(rec.completions) == 1
            await dismiss(client, second)
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(uri=inventory, version=2),
                [types.TextDocumentContentChangeWholeDocument(text=INVENTORY.replace("reorders below", "restocks under"))]))
            third = await inline(client, billing, *CURSOR)
            assert len(rec.completions) == 2 and (await stats(client)).cache_hits == 1
            assert any("restocks under" in s["text"] for s in rec.completions[-1][0]["segments"]["snippets"])

            # contextChars 0 turns it off: no snippets field at all.
            await dismiss(client, third)
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"contextChars": 0}))
            await inline(client, billing, *CURSOR)
            assert "snippets" not in rec.completions[-1][0]["segments"]
            assert (await stats(client)).with_context == 2


async def test_the_real_server_puts_the_snippets_in_its_prompt(server, lsp_data, tmp_path, smol_tokenizer):
    """The server's side: server/schemas.py's Segments.snippets, codeloop/fim.py's render_context."""
    root = workspace(tmp_path)
    billing = (root / "billing.py").as_uri()
    with recorder(upstream=server.url) as rec:
        async with lsp_session(rec.url, lsp_data, workspace=root) as client:
            open_doc(client, (root / "stock" / "inventory.py").as_uri(), INVENTORY)
            open_doc(client, billing, BILLING)
            await inline(client, billing, *CURSOR)
    body, status, answer = rec.completions[-1]
    assert status == 200, f"the server refused segments.snippets: {answer}"
    snippets = body["segments"]["snippets"]
    assert {s["filepath"] for s in snippets} == {"stock/inventory.py", "accounts/ledger.py"}
    # The same request without them: the prompt is shorter by at least the snippets' tokens.
    without = {**body, "segments": {k: v for k, v in body["segments"].items() if k != "snippets"}}
    bare = httpx.post(server.url + "/v1/completions", json=without, timeout=120).json()
    snippet_tokens = sum(len(smol_tokenizer(s["text"])["input_ids"]) for s in snippets)
    assert answer["usage"]["prompt_tokens"] - bare["usage"]["prompt_tokens"] >= 0.9 * snippet_tokens
    row = wait_for_outcome(server.url, answer["id"], lambda r: True)  # the server's record says so too
    assert row["context_snippets"] == 2 and row["context_tokens"] >= 0.9 * snippet_tokens
