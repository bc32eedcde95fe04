"""Privacy in the telemetry store: secrets scrubbed before rows are queued, code erased after
the retention, a user's rows deleted; all on real DuckDB files."""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import CancelledError
from contextlib import closing
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from feedback import queries
from feedback.db import open_db
from feedback.privacy import expire_code, forget_user
from feedback.writer import TelemetryWriter

T0 = datetime(2026, 5, 4, 9, 0, 0)
# Built from pieces so that secret scanners do not flag this file.
TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4"
PREFIX = f'import requests\nGITHUB = "{TOKEN}"\ndef fetch(url):\n    '
SCRUBBED_PREFIX = 'import requests\nGITHUB = "<SECRET:github_token>"\ndef fetch(url):\n    '


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def completion(cid: str, **extra) -> dict:
    return {"id": cid, "created_at": T0, "user_id": "u-alice", "language": "python",
            "prefix": "def f(x):\n    ", "suffix": "\n", "text": "return x + 1", **extra}


def events(cid: str) -> list[dict]:
    return [{"completion_id": cid, "kind": "shown", "at": T0 + timedelta(seconds=1)},
            {"completion_id": cid, "kind": "accepted", "at": T0 + timedelta(seconds=2)}]


def rows(writer: TelemetryWriter, sql: str) -> list[tuple]:
    with closing(writer.reader()) as cursor:
        return cursor.execute(sql).fetchall()


@pytest.mark.parametrize("store_code", [True, False])
def test_secrets_are_scrubbed_before_queueing_and_hashes_are_of_the_scrubbed_text(db_path: Path, store_code: bool) -> None:
    with TelemetryWriter(db_path, store_code=store_code, flush_interval_s=0) as writer:
        found = writer.add_completion(completion("c1", prefix=PREFIX, suffix=f"# {TOKEN}\n", text=f"get({TOKEN!r})",
                                                 repo=f"https://x:{TOKEN}@github.com/acme/app.git"))
        assert found == {"github_token": 4}
        writer.flush(5)
        (row,) = rows(writer, "SELECT prefix, suffix, text, repo, prefix_chars, suffix_chars, text_chars, prefix_sha256 FROM completions")
    prefix, suffix, text, repo, prefix_chars, suffix_chars, text_chars, prefix_sha = row
    if store_code:
        assert prefix == SCRUBBED_PREFIX and suffix == "# <SECRET:github_token>\n"
        assert text == "get('<SECRET:github_token>')"
    else:
        assert prefix is suffix is text is None
    assert repo == "https://x:<SECRET:github_token>@github.com/acme/app.git"
    # Lengths are the client's (events count characters of the text it showed) ...
    assert (prefix_chars, suffix_chars, text_chars) == (len(PREFIX), len(TOKEN) + 3, len(TOKEN) + 7)
    # ... the hash is of the scrubbed text, in both modes, so it cannot confirm a guessed secret.
    assert prefix_sha == sha(SCRUBBED_PREFIX)
    assert TOKEN.encode() not in db_path.read_bytes()


def test_code_without_secrets_is_stored_as_sent(writer: TelemetryWriter) -> None:
    assert writer.add_completion(completion("c1")) == {}
    writer.flush(5)
    assert rows(writer, "SELECT prefix, text, prefix_sha256 FROM completions") == [("def f(x):\n    ", "return x + 1", sha("def f(x):\n    "))]


def test_expire_code_erases_old_code_in_chunks_and_keeps_every_count(writer: TelemetryWriter) -> None:
    for i in range(5):
        writer.add_completion(completion(f"old{i}", created_at=T0 - timedelta(days=40)))
        writer.add_events(events(f"old{i}")).result(5)
    writer.add_completion(completion("new", created_at=T0))
    writer.add_events(events("new")).result(5)
    before = [asdict(r) for r in rows_acceptance(writer)]

    cutoff = T0 - timedelta(days=30)
    assert [writer.expire_code(cutoff, limit=2).result(5) for _ in range(4)] == [2, 2, 1, 0]
    stored = {r[0]: r[1:] for r in rows(writer, "SELECT id, prefix, suffix, text, prefix_chars, text_chars, prefix_sha256 FROM completions")}
    for i in range(5):
        assert stored[f"old{i}"] == (None, None, None, 14, 12, sha("def f(x):\n    "))
    assert stored["new"][:3] == ("def f(x):\n    ", "\n", "return x + 1")
    assert [asdict(r) for r in rows_acceptance(writer)] == before  # counts, accepted chars: unchanged
    assert rows(writer, "SELECT count(*) FROM events") == [(12,)]


def rows_acceptance(writer: TelemetryWriter):
    with closing(writer.reader()) as cursor:
        return queries.acceptance(cursor, "language", None, None)


def test_forget_user_deletes_their_completions_events_and_outcomes_only(writer: TelemetryWriter) -> None:
    for i in range(3):
        writer.add_completion(completion(f"a{i}"))
        writer.add_events(events(f"a{i}")).result(5)
    writer.add_completion(completion("b0", user_id="u-bob"))
    writer.add_events(events("b0")).result(5)
    writer.add_completion(completion("a-queued"))  # not yet written: deleted too

    forgotten = writer.forget_user("u-alice").result(5)
    assert forgotten.as_dict() == {"user": "u-alice", "completions": 4, "events": 6}
    assert rows(writer, "SELECT id FROM completions") == [("b0",)]
    assert rows(writer, "SELECT DISTINCT completion_id FROM events") == [("b0",)]
    assert rows(writer, "SELECT completion_id FROM completion_outcomes") == [("b0",)]
    # A late event for a forgotten completion is refused as unknown, not stored as an orphan.
    assert writer.completion_lengths(["a0", "a-queued", "b0"]) == {"b0": 12}
    assert writer.forget_user("u-alice").result(5).completions == 0


def test_forget_user_on_a_file_no_writer_holds(db_path: Path) -> None:
    with TelemetryWriter(db_path, flush_interval_s=0) as writer:
        writer.add_completion(completion("a0"))
        writer.add_events(events("a0")).result(5)
    con = open_db(db_path)
    try:
        con.execute("BEGIN")
        assert forget_user(con, "u-alice").as_dict() == {"user": "u-alice", "completions": 1, "events": 2}
        con.execute("COMMIT")
        assert con.execute("SELECT count(*) FROM completions").fetchall() == [(0,)]
        assert expire_code(con, T0, 10) == 0  # nothing left to erase
    finally:
        con.close()


def test_a_call_cancelled_before_it_runs_is_skipped(writer: TelemetryWriter) -> None:
    release = threading.Event()
    busy = writer.execute(lambda con: release.wait(5))
    time.sleep(0.05)
    ran = []
    skipped = writer.execute(lambda con: ran.append(1))
    assert skipped.cancel()  # e.g. the retention job, cancelled at shutdown
    release.set()
    busy.result(5)
    writer.flush(5)
    assert ran == [] and writer.status()["healthy"]
    with pytest.raises(CancelledError):
        skipped.result(0)
