"""Open documents as the editor sees them: text, version, and LSP positions in code units.

LSP counts a position's `character` in UTF-16 code units by default (an emoji is two, a CJK
character one; a client may negotiate UTF-8 or UTF-32), while Python indexes code points.
Everything here converts at the edge and works on code-point offsets inside.

A change the document cannot apply (an unknown document, a range past the end, a version
older than the one held) never raises out of a notification handler: the document is
marked `stale` and gives no completions until the editor sends its full text again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

UTF16, UTF8, UTF32 = "utf-16", "utf-8", "utf-32"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Lone UTF-16 surrogates (JSON can carry them) become U+FFFD: same length in code
    points and in UTF-16 units, and the text can then be encoded to send on."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)


class DocumentError(ValueError):
    """A request names an unknown document or an impossible position."""


def line_starts(text: str) -> list[int]:
    """Offsets where each line begins (LSP treats \\n, \\r\\n and \\r as line ends)."""
    return [0] + [m.end() for m in _LINE_BREAK.finditer(text)]


def char_units(ch: str, encoding: str = UTF16) -> int:
    """How many code units of the position encoding one character takes."""
    if encoding == UTF16:
        return 2 if ord(ch) > 0xFFFF else 1
    if encoding == UTF32:
        return 1
    return len(ch.encode("utf-8", "surrogatepass"))


def units_len(text: str, encoding: str = UTF16) -> int:
    if encoding == UTF32:
        return len(text)
    return sum(char_units(ch, encoding) for ch in text)


def units_to_index(line_text: str, character: int, encoding: str = UTF16, *, strict: bool = True) -> int:
    """Code-point index in `line_text` of a `character` offset in code units.

    Past the end of the line it is the line's end (LSP says so). Inside one character (half
    of a UTF-16 surrogate pair, the middle of a UTF-8 sequence) it is an error when
    `strict`, otherwise the start of that character.
    """
    units = 0
    for index, ch in enumerate(line_text):
        if units >= character:
            return index
        units += char_units(ch, encoding)
        if units > character:
            if strict:
                raise DocumentError(f"character {character} falls inside one character ({ch!r} takes {char_units(ch, encoding)} {encoding} units)")
            return index
    return len(line_text)


@dataclass
class Document:
    uri: str
    language_id: str
    version: int
    text: str
    stale: bool = False
    encoding: str = UTF16  # the position encoding agreed at initialize
    _starts: list[int] | None = field(default=None, repr=False)

    def starts(self) -> list[int]:
        if self._starts is None:
            self._starts = line_starts(self.text)
        return self._starts

    def _line_text(self, line: int) -> str:
        starts = self.starts()
        end = starts[line + 1] if line + 1 < len(starts) else len(self.text)
        # The line's own text, without its line break.
        return self.text[starts[line]:end].rstrip("\r\n")

    def offset_at(self, line: int, character: int, *, strict: bool = True) -> int:
        """Code-point offset of an LSP position. `strict` refuses positions past the end."""
        if line < 0 or character < 0:
            raise DocumentError(f"negative position ({line}:{character})")
        starts = self.starts()
        if line >= len(starts):
            if strict:
                raise DocumentError(f"line {line} is past the end of {self.uri} ({len(starts)} lines)")
            return len(self.text)
        return starts[line] + units_to_index(self._line_text(line), character, self.encoding, strict=strict)

    def position_at(self, offset: int) -> tuple[int, int]:
        """LSP (line, character) of a code-point offset."""
        offset = max(0, min(offset, len(self.text)))
        starts = self.starts()
        lo, hi = 0, len(starts) - 1
        while lo < hi:  # last line start <= offset
            mid = (lo + hi + 1) // 2
            if starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo, units_len(self.text[starts[lo]:offset], self.encoding)

    def replace(self, start: int, end: int, new_text: str) -> None:
        self.text = self.text[:start] + new_text + self.text[end:]
        self._starts = None


@dataclass(frozen=True)
class Edit:
    """One applied change, in code-point offsets of the text before it."""

    start: int
    end: int
    new_text: str


class DocumentStore:
    def __init__(self, encoding: str = UTF16) -> None:
        self._docs: dict[str, Document] = {}
        self.encoding = encoding

    def __contains__(self, uri: str) -> bool:
        return uri in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def get(self, uri: str) -> Document:
        doc = self._docs.get(uri)
        if doc is None:
            raise DocumentError(f"unknown document {uri!r}: the editor must send textDocument/didOpen first")
        return doc

    def open(self, uri: str, language_id: str, version: int, text: str) -> Document:
        doc = self._docs[uri] = Document(uri, language_id or "", version, clean_text(text), encoding=self.encoding)
        return doc

    def close(self, uri: str) -> Document | None:
        return self._docs.pop(uri, None)

    def change(self, uri: str, version: int | None, changes: list[dict]) -> list[Edit]:
        """Apply LSP content changes in order; returns the edits, or raises DocumentError.

        `changes` items are {"text"} (full sync) or {"range": {start, end}, "text"}. On an
        error the document is left stale and nothing more is applied.
        """
        doc = self.get(uri)
        if version is not None and version <= doc.version and not doc.stale:
            raise DocumentError(f"version {version} of {uri} is not newer than {doc.version}; change ignored")
        edits: list[Edit] = []
        for change in changes:
            text = change.get("text")
            if not isinstance(text, str):
                doc.stale = True
                raise DocumentError("a content change without text")
            text = clean_text(text)
            rng = change.get("range")
            if rng is None:
                edits.append(Edit(0, len(doc.text), text))
                doc.replace(0, len(doc.text), text)
                doc.stale = False
                continue
            if doc.stale:
                continue  # incremental edits cannot repair a document that is out of sync
            try:
                start = doc.offset_at(rng["start"]["line"], rng["start"]["character"], strict=False)
                end = doc.offset_at(rng["end"]["line"], rng["end"]["character"], strict=False)
            except (DocumentError, KeyError, TypeError) as exc:
                doc.stale = True
                raise DocumentError(f"bad change range for {uri}: {exc}") from None
            if end < start:
                doc.stale = True
                raise DocumentError(f"change range for {uri} ends before it starts")
            edits.append(Edit(start, end, text))
            doc.replace(start, end, text)
        if version is not None:
            doc.version = version
        return edits
