"""Suggestion fates from edits and commands: typing ahead, rejected, accepted, retained."""
import pytest

from lsp.documents import DocumentStore
from lsp.tracking import Tracker, Watch


class Recorder:
    def __init__(self):
        self.events, self.timers = [], []

    def emit(self, kind, completion_id, **fields):
        self.events.append((kind, completion_id, fields))

    def schedule(self, delay, fn):
        self.timers.append((delay, fn))

    def kinds(self):
        return [(k, c) for k, c, _ in self.events]

    def fire_timers(self):
        for _, fn in sorted(self.timers, key=lambda t: t[0]):
            fn()
        self.timers.clear()


@pytest.fixture
def setup():
    store, rec = DocumentStore(), Recorder()
    tracker = Tracker(rec.emit, rec.schedule, (30.0, 120.0))
    doc = store.open("u", "python", 1, "def f():\n    \n")
    return store, rec, tracker, doc


def type_text(store, tracker, doc, offset, text, version):
    line, ch = doc.position_at(offset)
    edits = store.change(doc.uri, version, [{"range": {"start": {"line": line, "character": ch}, "end": {"line": line, "character": ch}}, "text": text}])
    tracker.edited(doc, edits)


def test_typing_the_suggestion_keeps_it_and_answers_the_rest(setup):
    store, rec, tracker, doc = setup
    cursor = 13
    tracker.shown(doc, "c1", cursor, "return 42")
    type_text(store, tracker, doc, cursor, "ret", 2)
    item = tracker.typing_ahead(doc, cursor + 3)
    assert item is not None and item.text[item.typed:] == "urn 42"
    assert tracker.typing_ahead(doc, cursor + 2) is None  # not where the cursor is
    assert rec.kinds() == [("shown", "c1")]


def test_typing_something_else_rejects(setup):
    store, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    type_text(store, tracker, doc, 13, "x", 2)
    assert rec.kinds() == [("shown", "c1"), ("rejected", "c1")]
    assert tracker.typing_ahead(doc, 14) is None


def test_a_new_suggestion_supersedes_the_visible_one(setup):
    _, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    tracker.shown(doc, "c1", 13, "return 42")  # the same one again: nothing new
    tracker.shown(doc, "c2", 13, "pass")
    assert rec.kinds() == [("shown", "c1"), ("rejected", "c1"), ("shown", "c2")]


def test_an_edit_above_moves_the_suggestion(setup):
    store, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    type_text(store, tracker, doc, 0, "# top\n", 2)
    assert tracker.typing_ahead(doc, 19) is not None
    assert rec.kinds() == [("shown", "c1")]


def test_accept_then_retention_through_edits(setup):
    store, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    type_text(store, tracker, doc, 13, "return 42", 2)  # what the editor's accept inserts
    assert tracker.accepted("c1")
    assert rec.kinds()[-1] == ("accepted", "c1")
    assert rec.events[-1][2]["accepted_chars"] == 9
    # Typing before the accepted text moves it; rewriting "42" as "7" keeps 7 of 9 characters.
    type_text(store, tracker, doc, 0, "import os\n", 3)
    start = doc.text.index("return 42")
    edits = store.change("u", 4, [{"range": {"start": {"line": 2, "character": 11}, "end": {"line": 2, "character": 13}}, "text": "7"}])
    tracker.edited(doc, edits)
    assert doc.text[start:start + 8] == "return 7"
    rec.fire_timers()
    retained = [(f["age_s"], f["retained_ratio"]) for k, _, f in rec.events if k == "retained"]
    assert retained == [(30.0, round(7 / 9, 4)), (120.0, round(7 / 9, 4))]
    assert tracker.watches == []


def test_partial_accept_and_unknown_ids(setup):
    _, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    assert tracker.accepted("c1", 6)
    assert rec.events[-1][:2] == ("partial", "c1") and rec.events[-1][2]["accepted_chars"] == 6
    assert not tracker.accepted("never-shown")
    assert not tracker.dismissed("never-shown")


def test_dismissed(setup):
    _, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    assert tracker.dismissed("c1")
    assert rec.kinds() == [("shown", "c1"), ("dismissed", "c1")]
    assert tracker.typing_ahead(doc, 13) is None


def test_deleting_the_accepted_text_retains_nothing(setup):
    store, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    type_text(store, tracker, doc, 13, "return 42", 2)
    tracker.accepted("c1")
    edits = store.change("u", 3, [{"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 13}}, "text": ""}])
    tracker.edited(doc, edits)
    rec.fire_timers()
    assert [f["retained_ratio"] for k, _, f in rec.events if k == "retained"] == [0.0, 0.0]


def test_accept_before_the_insert_arrives_waits_for_it(setup):
    store, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    tracker.accepted("c1")  # some clients run the command before sending the edit
    type_text(store, tracker, doc, 13, "return 42", 2)
    rec.fire_timers()
    assert [f["retained_ratio"] for k, _, f in rec.events if k == "retained"] == [1.0, 1.0]


def test_watch_span_arithmetic():
    store = DocumentStore()
    doc = store.open("u", "x", 1, "0123456789")
    watch = Watch("c", doc, "3456", 3, 7)
    from lsp.documents import Edit

    watch.apply(Edit(0, 1, "ab"))  # before: shifts
    assert (watch.start, watch.end) == (4, 8)
    watch.apply(Edit(8, 8, "zz"))  # right after: unchanged
    assert (watch.start, watch.end) == (4, 8)
    watch.apply(Edit(5, 6, ""))  # inside: shrinks
    assert (watch.start, watch.end) == (4, 7)


def test_a_second_partial_accept_replaces_the_first_watch(setup):
    store, rec, tracker, doc = setup
    tracker.shown(doc, "c1", 13, "return 42")
    type_text(store, tracker, doc, 13, "return", 2)
    tracker.accepted("c1", 6)
    type_text(store, tracker, doc, 19, " 42", 3)
    tracker.accepted("c1", 9)
    assert [k for k, _, _ in rec.events] == ["shown", "partial", "accepted"]
    rec.fire_timers()
    assert [f["retained_ratio"] for k, _, f in rec.events if k == "retained"] == [1.0, 1.0]
