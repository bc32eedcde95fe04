"""Privacy of stored telemetry: secrets scrubbed before a row is queued, code text erased
after `retention_days`, every row of a user deleted on request.

Erasing is logical. DuckDB leaves the old bytes in the file's freed blocks until new data
reuses them (CHECKPOINT and VACUUM do not overwrite them); only rewriting the file
(feedback/compact.py) removes them physically. Copies outside the database (training runs'
datasets, exports) are feedback/copies.py's.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from . import experiment_rows, review_rows
from .secrets import scrub

CODE_COLUMNS = ("prefix", "suffix", "text")
# repo too: a client may send a remote URL, and those carry tokens (https://x:ghp_…@host).
SCRUBBED_COLUMNS = (*CODE_COLUMNS, "repo")
_ANY_CODE = " OR ".join(f"{c} IS NOT NULL" for c in CODE_COLUMNS)


def scrub_row(row: dict[str, Any]) -> Counter:
    """Replace the secrets in a completion row's text columns, in place; how many of each kind."""
    found: Counter = Counter()
    for column in SCRUBBED_COLUMNS:
        value = row.get(column)
        if value:
            row[column], counts = scrub(value)
            found.update(counts)
    return found


def expire_code(con: duckdb.DuckDBPyConnection, older_than: datetime, limit: int) -> int:
    """Set prefix/suffix/text to NULL for at most `limit` completions created before
    `older_than` (naive UTC) that still hold code; returns how many. Lengths, hashes, events
    and outcomes stay. Bounded so that one call never holds the writer for long: call
    again while it returns `limit`."""
    return con.execute(
        f"UPDATE completions SET prefix = NULL, suffix = NULL, text = NULL WHERE id IN ("
        f"SELECT id FROM completions WHERE created_at < ? AND ({_ANY_CODE}) LIMIT ?)",
        [older_than, limit],
    ).fetchall()[0][0]


@dataclass(frozen=True)
class Forgotten:
    """What `forget_user` deleted."""

    user: str
    completions: int
    events: int
    ids: tuple[str, ...]  # the deleted completion ids (the writer forgets them too)
    experiments: int = 0  # experiments whose `users` list named them
    review_votes: int = 0  # votes they cast in blind reviews (the reviewer is the same pseudonym)

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "completions": self.completions, "events": self.events}


def forget_user(con: duckdb.DuckDBPyConnection, user: str) -> Forgotten:
    """Delete the user's completions, their events and outcome rows and their review votes,
    and take them off the `users` lists of experiments. Run it in a transaction (the writer's
    `execute`, or BEGIN/COMMIT around it) so that it is all or nothing."""
    experiments = experiment_rows.drop_user(con, user)
    votes = review_rows.drop_reviewer(con, user)
    ids = tuple(r[0] for r in con.execute("SELECT id FROM completions WHERE user_id = ?", [user]).fetchall())
    if not ids:
        return Forgotten(user, 0, 0, (), experiments, votes)
    mine = "(SELECT unnest(?::VARCHAR[]))"
    # Events carry no user id; they go by completion id (whatever their "at" says).
    events = con.execute(f"DELETE FROM events WHERE completion_id IN {mine}", [list(ids)]).fetchall()[0][0]
    con.execute(f"DELETE FROM completion_outcomes WHERE completion_id IN {mine}", [list(ids)])
    completions = con.execute("DELETE FROM completions WHERE user_id = ?", [user]).fetchall()[0][0]
    return Forgotten(user, int(completions), int(events), ids, experiments, votes)

