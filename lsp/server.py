"""The pygls language server: one handler per LSP feature; the logic lives in the modules
they call (documents, context, completion, tracking, events), which tests drive directly."""
from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from lsp.client import ServerClient
from lsp.completion import Answer, Completer, Selected
from lsp.config import LspConfig
from lsp.context import ContextIndex
from lsp.documents import DocumentError, DocumentStore, clean_text
from lsp.events import EventSender
from lsp.spool import EventSpool
from lsp.status import server_status
from lsp.tracking import Tracker
from lsp.workspace import Workspace, workspace_roots

log = logging.getLogger(__name__)
ACCEPT = "codeloop.accept"
DISMISS = "codeloop.dismiss"
STATS = "codeloop/stats"
STATUS = "codeloop/status"


class Protocol(LanguageServerProtocol):
    """pygls' protocol, but a request whose params do not fit its method gets an
    InvalidParams error back instead of no answer at all (the client would wait forever)."""

    def structure_message(self, data: dict[str, Any]):
        if isinstance(data, dict) and data.get("method") == types.TEXT_DOCUMENT_INLINE_COMPLETION:
            _old_trigger_kind(data)
        if isinstance(data, dict) and _is_notification(data.get("method")) and isinstance(data.get("id"), (int, str)) and "jsonrpc" in data:
            # A request (it has an id) for a notification: answer it, or the client waits forever.
            self._send_response(data["id"], None, JsonRpcInvalidRequest(f"{data['method']} is a notification: send it without an id").to_response_error())
            return SimpleNamespace(jsonrpc="ignored")
        try:
            return super().structure_message(data)
        except Exception as exc:
            if isinstance(data, dict) and "id" in data and "method" in data and isinstance(data["id"], (int, str)):
                cause = exc.__cause__ or exc
                self._send_response(data["id"], None, JsonRpcInvalidParams(f"invalid params for {data['method']}: {cause}"[:2000]).to_response_error())
            return SimpleNamespace(jsonrpc="ignored")  # handle_message skips it


def _is_notification(method: Any) -> bool:
    known = types.METHOD_TO_TYPES.get(method) if isinstance(method, str) else None
    return method == types.CANCEL_REQUEST or (known is not None and known[0].__name__.endswith("Notification"))


def _old_trigger_kind(data: dict) -> None:
    """Clients on vscode-languageserver-protocol 3.17.x send the draft's triggerKind 0 for
    Invoked (3.18 made it 1); accept it rather than refuse every manual trigger."""
    context = data.get("params", {}).get("context") if isinstance(data.get("params"), dict) else None
    if isinstance(context, dict) and context.get("triggerKind") == 0:
        context["triggerKind"] = types.InlineCompletionTriggerKind.Invoked.value


class CodeloopLanguageServer(LanguageServer):
    def __init__(self, config: LspConfig) -> None:
        super().__init__("codeloop", "0.1", protocol_cls=Protocol, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        # Our DocumentStore is the one copy of the documents (it never raises out of a
        # notification); pygls' own copy would only double the memory and the errors.
        for method in (types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE, types.TEXT_DOCUMENT_DID_CLOSE):
            self.protocol.fm.builtin_features.pop(method, None)
        self.config = config
        self.store = DocumentStore()
        self.client = self._client(config)
        self.spool = EventSpool(config.spool_dir)
        self.sender = EventSender(self.spool, self.client, config.event_flush_ms)
        self.tracker = Tracker(self._emit, self._schedule, config.retention_s)
        self.context = ContextIndex(Workspace())
        self.completer = Completer(config, self.store, self.tracker, self.client, self.context)

    def _client(self, config: LspConfig) -> ServerClient:
        return ServerClient(config.server_url, config.token, config.timeout_ms / 1000, on_auth_refused=self._token_refused,
                            on_problem=self.warn)

    def _token_refused(self, message: str) -> None:
        self.window_show_message(types.ShowMessageParams(
            types.MessageType.Error, f"codeloop: the completion server refused the token: {message} "
                                     "Set the token setting (codeloop.token in VS Code) to a token from its operator."))

    def _emit(self, kind: str, completion_id: str, **fields) -> None:
        self.sender.record(kind, completion_id, **fields)

    def _schedule(self, delay: float, callback) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    def apply_options(self, options: Any) -> list[str]:
        """Apply the editor's options, each bad one left out; returns one problem per bad one."""
        config, problems = self.config.apply(options)
        if (config.server_url, config.token, config.timeout_ms) != (self.config.server_url, self.config.token, self.config.timeout_ms):
            old, self.client = self.client, self._client(config)
            self.sender.client = self.client
            asyncio.get_running_loop().create_task(old.aclose())
        self.sender.flush_s = config.event_flush_ms / 1000
        self.tracker.retention_s = config.retention_s
        self.completer.reconfigure(config, self.client)
        self.config = config
        return problems

    def warn(self, message: str) -> None:
        """A problem the user must see in the editor (not only in a log nobody reads)."""
        log.warning(message)
        self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"codeloop: {message}"))

    def report_server_error(self, error: Exception, source) -> None:
        # pygls would pop up an error in the editor for every bad notification; a log line is enough.
        log.warning("%s: %s", getattr(source, "__name__", source), error)

    def stats(self) -> dict:
        return {**self.completer.stats.as_dict(), "events_sent": self.sender.sent, "events_refused": self.sender.refused,
                "events_unsent": self.spool.unsent_count(), "events_dropped": self.spool.dropped,
                "documents": len(self.store), "context_documents": len(self.context),
                "retention_watches": len(self.tracker.watches)}


def build_server(config: LspConfig) -> CodeloopLanguageServer:
    server = CodeloopLanguageServer(config)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeloopLanguageServer, params: types.InitializeParams) -> None:
        encoding = ls.workspace.position_encoding or "utf-16"
        ls.store.encoding = str(getattr(encoding, "value", encoding))  # pygls gives an enum or a str
        ls.context.workspace.set_roots(workspace_roots(
            [f.uri for f in params.workspace_folders or []], params.root_uri, params.root_path))
        for problem in ls.apply_options(params.initialization_options):
            ls.warn(problem)

    @server.feature(types.INITIALIZED)
    def initialized(ls: CodeloopLanguageServer, params: types.InitializedParams) -> None:
        ls.sender.start()
        if ls.config.context_chars:
            # The workspace's files are listed once, in a thread: no request waits for it.
            asyncio.get_running_loop().run_in_executor(None, ls.context.workspace.warm_up)

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: CodeloopLanguageServer, params: Any) -> None:
        await ls.sender.stop()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: CodeloopLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        for problem in ls.apply_options(params.settings):
            ls.warn(problem)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CodeloopLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        ls.tracker.closed(doc.uri)
        ls.context.opened(ls.store.open(doc.uri, doc.language_id, doc.version, doc.text))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CodeloopLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        changes = [{"text": c.text, **({"range": _range_dict(c.range)} if hasattr(c, "range") else {})}
                   for c in params.content_changes]
        try:
            edits = ls.store.change(uri, params.text_document.version, changes)
        except DocumentError as exc:
            log.warning("didChange: %s", exc)
            if uri in ls.store:
                ls.tracker.closed(uri)
            return
        ls.tracker.edited(ls.store.get(uri), edits)
        ls.context.changed(ls.store.get(uri), edits)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeloopLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.tracker.closed(params.text_document.uri)
        ls.context.closed(params.text_document.uri)
        ls.store.close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: CodeloopLanguageServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        doc, offset = _position(ls, params.text_document.uri, params.position)
        context = params.context
        selected = None
        if context is not None and context.selected_completion_info is not None:
            info = context.selected_completion_info
            start, end = _offsets(doc, info.range)
            selected = Selected(start, end, clean_text(info.text))
        automatic = context is None or context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
        answer = await _answer(ls, doc, offset, automatic, selected)
        if answer is None:
            return types.InlineCompletionList(items=[])
        return types.InlineCompletionList(items=[types.InlineCompletionItem(
            insert_text=answer.insert_text, range=_range(doc, answer.start, answer.end), command=_accept_command(answer))])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: CodeloopLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        doc, offset = _position(ls, params.text_document.uri, params.position)
        manual = params.context is not None and params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        answer = await _answer(ls, doc, offset, not manual, None)
        if answer is None:
            return types.CompletionList(is_incomplete=True, items=[])
        return types.CompletionList(is_incomplete=True, items=[completion_item(doc, offset, answer)])

    @server.command(ACCEPT)
    def accept(ls: CodeloopLanguageServer, *args: Any) -> bool:
        """codeloop.accept(completion_id[, accepted_chars]): the editor accepted (part of) a suggestion."""
        completion_id, chars = accept_arguments(args)
        if not ls.tracker.accepted(completion_id, chars):
            raise JsonRpcInvalidParams(f"{ACCEPT}: unknown completion id {args[0]!r}")
        return True

    @server.command(DISMISS)
    def dismiss(ls: CodeloopLanguageServer, *args: Any) -> bool:
        """codeloop.dismiss(completion_id): the user dismissed the suggestion (Escape)."""
        if not args or not isinstance(args[0], str):
            raise JsonRpcInvalidParams(f"{DISMISS} takes (completion_id: string)")
        return ls.tracker.dismissed(args[0])

    @server.feature(STATS)
    def stats(ls: CodeloopLanguageServer, params: Any) -> dict:
        """Counters for tests, benchmarks and the curious: requests, cache hits, events."""
        return ls.stats()

    @server.feature(STATUS)
    async def status(ls: CodeloopLanguageServer, params: Any) -> dict:
        """For the editor's status bar: live adapter, this user's experiment arm, today's acceptance."""
        return await server_status(ls.client)

    return server


def completion_item(doc, offset: int, answer: Answer) -> types.CompletionItem:
    """The suggestion as a completion-menu item. Editors filter items by the word before the
    cursor, so the item replaces that word."""
    word_start = offset
    while word_start > 0 and (doc.text[word_start - 1].isalnum() or doc.text[word_start - 1] == "_"):
        word_start -= 1
    new_text = doc.text[word_start:offset] + answer.insert_text
    label = new_text.strip().splitlines()[0][:80] if new_text.strip() else new_text
    return types.CompletionItem(
        label=label, kind=types.CompletionItemKind.Text, detail="codeloop", filter_text=new_text,
        insert_text_format=types.InsertTextFormat.PlainText, sort_text="0",
        text_edit=types.TextEdit(_range(doc, word_start, offset), new_text), command=_accept_command(answer))


def accept_arguments(args: tuple) -> tuple[str, int | None]:
    """(completion_id, accepted_chars or None) from codeloop.accept's arguments, or an LSP error."""
    if not args or not isinstance(args[0], str):
        raise JsonRpcInvalidParams(f"{ACCEPT} takes (completion_id: string[, accepted_chars: integer])")
    chars = args[1] if len(args) > 1 else None
    if chars is not None and (isinstance(chars, bool) or not isinstance(chars, int) or chars < 0):
        raise JsonRpcInvalidParams(f"{ACCEPT}: accepted_chars must be a non-negative integer")
    return args[0], chars


async def _answer(ls: CodeloopLanguageServer, doc, offset: int, automatic: bool, selected: Selected | None) -> Answer | None:
    try:
        return await ls.completer.complete(doc, offset, automatic=automatic, selected=selected)
    except DocumentError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None


def _position(ls: CodeloopLanguageServer, uri: str, position: types.Position):
    try:
        return ls.completer.position(uri, position.line, position.character)
    except DocumentError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None


def _offsets(doc, rng: types.Range) -> tuple[int, int]:
    try:
        return doc.offset_at(rng.start.line, rng.start.character), doc.offset_at(rng.end.line, rng.end.character)
    except DocumentError as exc:
        raise JsonRpcInvalidParams(f"selectedCompletionInfo.range: {exc}") from None


def _range(doc, start: int, end: int) -> types.Range:
    (sl, sc), (el, ec) = doc.position_at(start), doc.position_at(end)
    return types.Range(types.Position(sl, sc), types.Position(el, ec))


def _range_dict(rng: types.Range) -> dict:
    return {"start": {"line": rng.start.line, "character": rng.start.character},
            "end": {"line": rng.end.line, "character": rng.end.character}}


def _accept_command(answer: Answer) -> types.Command:
    return types.Command(title="codeloop: accepted", command=ACCEPT, arguments=[answer.completion_id])
