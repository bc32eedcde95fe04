"""Documents: LSP positions in UTF-16 units (emoji, CJK), full and incremental sync, bad changes."""
import pytest

from lsp.documents import Document, DocumentError, DocumentStore, Edit, units_to_index

EMOJI_LINE = "s = '😀 ok'  # 中文\n"


def test_utf16_positions_count_emoji_as_two_units_and_cjk_as_one():
    doc = Document("file:///a.py", "python", 1, EMOJI_LINE + "x = 1\n")
    # "s = '" is 5 units, the emoji two more: "ok" starts at unit 8 but code point 7.
    assert doc.offset_at(0, 8) == EMOJI_LINE.index("ok") == 7
    cjk = EMOJI_LINE.index("中")
    assert doc.offset_at(0, cjk + 1) == cjk  # one unit more than code points: the emoji
    assert doc.offset_at(0, cjk + 2) == cjk + 1  # CJK characters are one unit each
    assert doc.position_at(cjk + 1) == (0, cjk + 2)
    assert doc.position_at(doc.offset_at(1, 3)) == (1, 3)


def test_a_position_inside_a_surrogate_pair_is_an_error_in_requests():
    doc = Document("file:///a.py", "python", 1, EMOJI_LINE)
    with pytest.raises(DocumentError, match="inside one character"):
        doc.offset_at(0, 6)  # between the two halves of 😀
    assert doc.offset_at(0, 6, strict=False) == EMOJI_LINE.index("😀")


def test_positions_past_the_end():
    doc = Document("file:///a.py", "python", 1, "ab\ncd")
    assert doc.offset_at(0, 99) == 2  # past the line's end: the line's end (LSP rule)
    with pytest.raises(DocumentError, match="past the end"):
        doc.offset_at(5, 0)
    with pytest.raises(DocumentError, match="negative"):
        doc.offset_at(-1, 0)


def test_other_position_encodings():
    assert units_to_index("😀x", 4, "utf-8") == 1
    assert units_to_index("😀x", 1, "utf-32") == 1
    with pytest.raises(DocumentError):
        units_to_index("é", 1, "utf-8")


def test_crlf_and_cr_line_ends():
    doc = Document("u", "python", 1, "a\r\nb\rc\nd")
    assert [doc.offset_at(i, 0) for i in range(4)] == [0, 3, 5, 7]
    assert doc.offset_at(0, 5) == 1  # the line break is not part of the line


def test_incremental_and_full_changes_in_order():
    store = DocumentStore()
    store.open("u", "python", 1, "hello world\n")
    edits = store.change("u", 2, [
        {"range": {"start": {"line": 0, "character": 5}, "end": {"line": 0, "character": 11}}, "text": ", 😀"},
        {"range": {"start": {"line": 0, "character": 9}, "end": {"line": 0, "character": 9}}, "text": "!"},  # after the emoji (2 units)
    ])
    assert store.get("u").text == "hello, 😀!\n"
    assert edits == [Edit(5, 11, ", 😀"), Edit(8, 8, "!")]
    store.change("u", 3, [{"text": "new"}])
    assert store.get("u").text == "new" and store.get("u").version == 3


def test_unknown_documents_old_versions_and_bad_ranges():
    store = DocumentStore()
    with pytest.raises(DocumentError, match="didOpen"):
        store.change("nope", 1, [{"text": "x"}])
    store.open("u", "python", 5, "abc")
    with pytest.raises(DocumentError, match="not newer"):
        store.change("u", 4, [{"text": "old"}])
    assert store.get("u").text == "abc"
    with pytest.raises(DocumentError, match="ends before it starts"):
        store.change("u", 6, [{"range": {"start": {"line": 0, "character": 2}, "end": {"line": 0, "character": 1}}, "text": ""}])
    assert store.get("u").stale  # out of sync: no completions until the full text comes
    store.change("u", 7, [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}, "text": "ignored"}])
    assert store.get("u").text == "abc"
    store.change("u", 8, [{"text": "fresh"}])
    assert not store.get("u").stale and store.get("u").text == "fresh"


def test_lone_surrogates_become_replacement_characters():
    store = DocumentStore()
    doc = store.open("u", "python", 1, "a\ud83db")
    assert doc.text == "a\ufffdb" and doc.text.encode("utf-8")
    store.change("u", 2, [{"range": {"start": {"line": 0, "character": 3}, "end": {"line": 0, "character": 3}}, "text": "\udc00"}])
    assert doc.text == "a\ufffdb\ufffd"
