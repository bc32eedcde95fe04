"""ContextIndex: which windows of other code go with a completion request, within the budget,
stable while the user types within a line (plain logic: documents in, snippets out)."""
import os
from pathlib import Path

import pytest

from lsp.config import ConfigError, LspConfig
from codeloop.snippets import Snippet, Window, identifiers
from lsp.context import MAX_RECENT_EDITS, ContextIndex, steadier
from lsp.documents import DocumentStore, Edit
from lsp.workspace import Workspace, list_code_files, workspace_roots

ROOT = "/work/shop"
BUDGET = {"budget_chars": 1500, "max_snippets": 4}

LEDGER = '''"""Invoices and their lines."""


class InvoiceLedger:
    def __init__(self):
        self.lines = []

    def add_line(self, invoice_number, amount_due):
        self.lines.append((invoice_number, amount_due))

    def total_due(self, invoice_number):
        return sum(amount for number, amount in self.lines if number == invoice_number)
''' + "".join(f"\n\ndef unrelated_helper_{i}(shipping_zone, parcel_weight):\n    return parcel_weight * {i}\n" for i in range(12))

BILLING = "from ledger import InvoiceLedger\n\nledger = InvoiceLedger()\nledger.add_line(invoice_number, amount_due)\n"


def uri(path: str, root: str = ROOT) -> str:
    return Path(root, path).as_uri()


def make(root: str = ROOT, **kw):
    store = DocumentStore()
    index = ContextIndex(Workspace([root]), **kw)

    def open_doc(path: str, text: str, root_: str = root):
        doc = store.open(uri(path, root_), "python", 1, text)
        index.opened(doc)
        return doc

    def type_at_end(doc, text: str):
        start = len(doc.text)
        store.change(doc.uri, doc.version + 1, [{"text": text, "range": _range(doc, start)}])
        index.changed(doc, [Edit(start, start, text)])

    return store, index, open_doc, type_at_end


def _range(doc, offset: int) -> dict:
    line, ch = doc.position_at(offset)
    return {"start": {"line": line, "character": ch}, "end": {"line": line, "character": ch}}


def test_the_other_open_documents_matching_window_is_picked_never_the_current_one():
    _, index, open_doc, _ = make()
    open_doc("ledger.py", LEDGER)
    billing = open_doc("billing.py", BILLING)
    picked = index.snippets_for(billing.uri, billing.text + "print(ledger.to", **BUDGET)
    assert picked and all(s.filepath == "ledger.py" for s in picked)  # relative to the workspace folder
    assert "def add_line(self, invoice_number, amount_due)" in picked[-1].text  # the best one is last, nearest the prefix
    assert not any("unrelated_helper" in s.text and "invoice" not in s.text for s in picked)
    # The document being completed is never its own context, however alike.
    ledger = next(d for d in index._docs.values() if d.doc.uri.endswith("ledger.py")).doc
    assert all(s.filepath != "ledger.py" for s in index.snippets_for(ledger.uri, LEDGER, **BUDGET))


# Two windows (about 510 characters each) match: one per copy of the ledger.
@pytest.mark.parametrize("budget, most, count", [(1500, 4, 2), (700, 4, 1), (300, 4, 0), (5000, 1, 1), (0, 4, 0), (1500, 0, 0)])
def test_the_character_budget_and_the_count_are_respected(budget, most, count):
    _, index, open_doc, _ = make()
    open_doc("ledger.py", LEDGER)
    open_doc("ledger_copy.py", LEDGER.replace("InvoiceLedger", "InvoiceLedgerCopy"))
    billing = open_doc("billing.py", BILLING)
    picked = index.snippets_for(billing.uri, billing.text, budget_chars=budget, max_snippets=most)
    assert sum(len(s.text) for s in picked) <= budget and len(picked) == count


def test_the_answer_stays_the_same_object_while_the_user_types_within_a_line():
    _, index, open_doc, type_at_end = make()
    open_doc("ledger.py", LEDGER)
    billing = open_doc("billing.py", BILLING)
    first = index.snippets_for(billing.uri, billing.text, **BUDGET)
    for ch in "print(ledger.total_due(":
        type_at_end(billing, ch)
        assert index.snippets_for(billing.uri, billing.text, **BUDGET) is first


def test_a_new_line_with_other_identifiers_changes_the_answer():
    _, index, open_doc, type_at_end = make()
    open_doc("ledger.py", LEDGER)
    billing = open_doc("billing.py", BILLING)
    first = index.snippets_for(billing.uri, billing.text, **BUDGET)
    type_at_end(billing, "".join(f"cost = unrelated_helper_{i}(shipping_zone, parcel_weight)\n" for i in range(20)))
    second = index.snippets_for(billing.uri, billing.text, **BUDGET)
    assert second != first and "unrelated_helper" in second[-1].text and "add_line" not in second[-1].text


def test_an_edit_in_the_other_document_is_seen():
    store, index, open_doc, type_at_end = make()
    ledger = open_doc("ledger.py", "class InvoiceLedger:\n    pass\n")
    billing = open_doc("billing.py", BILLING)
    before = index.snippets_for(billing.uri, billing.text, **BUDGET)
    type_at_end(ledger, "    def add_line(self, invoice_number, amount_due):\n        self.refund_reason = None\n")
    after = index.snippets_for(billing.uri, billing.text, **BUDGET)
    assert after is not before and "refund_reason" in after[-1].text


def test_imports_under_the_workspace_folder_are_read_from_disk(tmp_path):
    root, outside = tmp_path / "shop", tmp_path / "elsewhere"
    (root / "src" / "accounts").mkdir(parents=True)
    outside.mkdir()
    (root / "src" / "accounts" / "__init__.py").write_text("")
    (root / "src" / "accounts" / "ledger.py").write_text(LEDGER)
    # Alike, but not imported: not read.
    (root / "src" / "notes.py").write_text(LEDGER.replace("InvoiceLedger", "NotImported"))
    # Imported, but a link out of the workspace folder: not read.
    (outside / "secrets.py").write_text("invoice_number = amount_due = 'LEAKED'\n")
    os.symlink(outside / "secrets.py", root / "src" / "accounts" / "vault.py")
    _, index, open_doc, _ = make(str(root))
    billing = open_doc("src/billing.py", "from accounts.ledger import InvoiceLedger\nfrom accounts import vault\n\n"
                       "ledger = InvoiceLedger()\nledger.add_line(invoice_number, amount_due)\n", str(root))
    picked = index.snippets_for(billing.uri, billing.text, **BUDGET)
    assert {s.filepath for s in picked} == {"src/accounts/ledger.py"}
    assert not any("LEAKED" in s.text or "NotImported" in s.text for s in picked)

    # A file changed on disk is read again (cached by mtime and size).
    ledger = root / "src" / "accounts" / "ledger.py"
    ledger.write_text(LEDGER.replace("self.lines = []", "self.lines = []  # amount_due invoice_number refund_policy"))
    os.utime(ledger, ns=(1, 10**18))
    assert any("refund_policy" in s.text for s in index.snippets_for(billing.uri, billing.text, **BUDGET))


def test_the_workspace_is_listed_once_with_dependencies_and_hidden_folders_left_out(tmp_path):
    for rel in ["app/main.py", "app/__init__.py", "web/index.ts", ".venv/lib/x.py", "node_modules/a/index.js", "README.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    names = list_code_files(str(tmp_path))
    assert names["main"] == ("app/main.py",) and set(names["app"]) == {"app/__init__.py"} and names["web"] == ("web/index.ts",)
    assert "x" not in names and "README" not in names and names["index"] == ("web/index.ts",)
    assert workspace_roots([], tmp_path.as_uri()) == [str(tmp_path)] and workspace_roots([], None, "/a/b/") == ["/a/b"]


def test_a_closed_document_leaves_but_its_recent_edit_ages_out():
    store, index, open_doc, type_at_end = make()
    ledger = open_doc("ledger.py", "\n" * 40)
    billing = open_doc("billing.py", BILLING)
    type_at_end(ledger, "def add_line(invoice_number, amount_due):\n    return 1\n")
    index.closed(ledger.uri)
    store.close(ledger.uri)
    kept = index.snippets_for(billing.uri, billing.text, **BUDGET)
    assert len(kept) == 1 and "def add_line" in kept[0].text  # the edited lines, from the closed document
    # Edits elsewhere (far apart, in another document) push it out.
    scratch = open_doc("scratch.py", "")
    for i in range(MAX_RECENT_EDITS):
        type_at_end(scratch, "\n" * 30 + f"step_{i} = {i}\n")
    assert not any("def add_line" in s.text for s in index.snippets_for(billing.uri, billing.text, **BUDGET))
    assert len(index) == 2  # billing and scratch


def test_only_the_most_recently_used_documents_are_considered():
    _, index, open_doc, type_at_end = make(max_documents=20)
    oldest = open_doc("ledger.py", LEDGER)
    for i in range(20):
        open_doc(f"other_{i}.py", f"def other_{i}(shipping_zone):\n    return shipping_zone\n")
    billing = open_doc("billing.py", BILLING)
    assert index.snippets_for(billing.uri, billing.text, **BUDGET) == []  # 21 documents before billing: ledger is out
    assert index._docs[oldest.uri].windows is None  # and keeps no windows
    type_at_end(oldest, "\n")  # used again: back in
    assert any(s.filepath == "ledger.py" for s in index.snippets_for(billing.uri, billing.text, **BUDGET))


def test_a_document_outside_the_workspace_is_named_by_its_path_and_untitled_ones_by_uri():
    store, index, open_doc, _ = make()
    open_doc("/tmp/ledger.py", LEDGER, "/")
    doc = store.open("untitled:Untitled-1", "python", 1, LEDGER.replace("InvoiceLedger", "DraftLedger"))
    index.opened(doc)
    billing = open_doc("billing.py", BILLING + "draft = DraftLedger()\n")
    assert {s.filepath for s in index.snippets_for(billing.uri, billing.text, **BUDGET)} == {"/tmp/ledger.py", "untitled:Untitled-1"}


def test_context_options():
    cfg = LspConfig().with_options({"contextChars": 0, "contextSnippets": 2})
    assert (cfg.context_chars, cfg.context_snippets) == (0, 2)
    assert (LspConfig().context_chars, LspConfig().context_snippets) == (1500, 4)
    with pytest.raises(ConfigError, match="contextChars"):
        LspConfig().with_options({"contextChars": -1})


def test_a_whole_text_resend_is_no_edit_and_minified_windows_are_never_sent():
    store, index, open_doc, _ = make()
    ledger = open_doc("ledger.py", "x = 1\n")
    store.change(ledger.uri, 2, [{"text": LEDGER}])  # full sync, as some editors send every change
    index.changed(ledger, [Edit(0, 6, LEDGER)])
    assert not index._edits
    # 20 lines of 500 characters: over the server's limit for one snippet.
    open_doc("bundle.min.py", "\n".join(f"invoice_number = amount_due = InvoiceLedger{i} # " + "z" * 450 for i in range(20)))
    billing = open_doc("billing.py", BILLING)
    picked = index.snippets_for(billing.uri, billing.text, budget_chars=100_000, max_snippets=4)
    assert picked and {s.filepath for s in picked} == {"ledger.py"}
    with pytest.raises(ConfigError, match="contextSnippets"):
        LspConfig().with_options({"contextSnippets": 17})  # the server takes 16 at most


# --- steadiness across lines: a changed list costs the engine a whole prompt read -----------

def _window(path: str, words: str) -> Window:
    text = f"# {words}\n"
    return Window(path, 0, text, identifiers(text))


COMMON = " ".join(f"shared_name_{i}" for i in range(9))
OLD, NEW = _window("a.py", COMMON + " only_in_old"), _window("b.py", COMMON + " only_in_new")


def _snippets(*ws: Window) -> list[Snippet]:
    return [Snippet(w.filepath, w.text) for w in ws]


def test_the_list_sent_last_is_kept_while_nearly_as_relevant():
    query = identifiers(COMMON + " only_in_new")  # NEW matches it whole, OLD 9 of 11 names
    previous = _snippets(OLD)
    assert steadier(previous, _snippets(NEW), [OLD, NEW], query) is previous


def test_a_much_better_list_or_a_changed_window_replaces_it():
    fresh = _snippets(NEW)
    query = identifiers("shared_name_0 only_in_new other_word another_word")  # OLD: 1 of 6 names
    assert steadier(_snippets(OLD), fresh, [OLD, NEW], query) is fresh
    query = identifiers(COMMON + " only_in_new")
    assert steadier(_snippets(OLD), fresh, [NEW], query) is fresh  # OLD's text is gone from a.py
    assert steadier([], fresh, [OLD, NEW], query) is fresh


def test_typing_on_new_lines_keeps_the_snippets_while_they_stay_relevant():
    _, index, open_doc, type_at_end = make()
    open_doc("ledger.py", LEDGER)
    open_doc("ledger_copy.py", LEDGER.replace("InvoiceLedger", "InvoiceLedgerCopy").replace("amount_due", "amount_owed"))
    billing = open_doc("billing.py", BILLING)
    first = index.snippets_for(billing.uri, billing.text, **BUDGET)
    assert [s.filepath for s in first] == ["ledger_copy.py", "ledger.py"]
    # The second line makes ledger.py's window the better one: a fresh ranking would swap them.
    for line in ("copy = InvoiceLedgerCopy()\n", "copy.add_line(invoice_number, amount_owed)\n"):
        type_at_end(billing, line)
        assert index.snippets_for(billing.uri, billing.text, **BUDGET) is first
    # Another budget is another answer.
    assert index.snippets_for(billing.uri, billing.text, budget_chars=700, max_snippets=4) is not first
