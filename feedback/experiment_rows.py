"""The `experiments` table: the A/B experiments the server runs, read at start and saved on change.

The server's ExperimentManager (server/experiments.py) holds the logic; this module holds the
SQL, so that the schema has one owner (feedback/). `arms` is JSON {"weights": {arm: weight},
"users": [..] or null}; `sequential_state` JSON {arm: stats.SequentialState dict}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb


@dataclass
class ExperimentRow:
    id: str
    name: str
    weights: dict[str, float]
    users: list[str] | None
    control: str
    status: str
    created_at: float  # unix seconds
    stopped_at: float | None
    winner: str | None
    alpha: float
    sequential_state: dict


def read_all(cursor: duckdb.DuckDBPyConnection) -> list[ExperimentRow]:
    rows = cursor.execute(
        "SELECT id, name, arms, control, status, epoch(created_at), epoch(stopped_at), winner, alpha, sequential_state "
        "FROM experiments").fetchall()
    found = []
    for r in rows:
        arms = json.loads(r[2])
        found.append(ExperimentRow(id=r[0], name=r[1], weights=arms["weights"], users=arms.get("users"), control=r[3],
                                   status=r[4], created_at=r[5], stopped_at=r[6], winner=r[7], alpha=r[8],
                                   sequential_state=json.loads(r[9] or "{}")))
    return found


def save(con: duckdb.DuckDBPyConnection, row: ExperimentRow) -> None:
    """Insert or replace the experiment with row.id."""
    con.execute("INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        row.id, row.name, json.dumps({"weights": row.weights, "users": row.users}), row.control, row.status,
        _timestamp(row.created_at), _timestamp(row.stopped_at), row.winner, row.alpha, json.dumps(row.sequential_state)])


def drop_user(con: duckdb.DuckDBPyConnection, user: str) -> int:
    """Remove the user from the experiments that list users (an emptied list covers nobody,
    unlike no list, which covers everyone); how many changed."""
    changed = 0
    for exp_id, arms in con.execute("SELECT id, arms FROM experiments").fetchall():
        spec = json.loads(arms)
        if user in (spec.get("users") or []):
            spec["users"] = [u for u in spec["users"] if u != user]
            con.execute("UPDATE experiments SET arms = ? WHERE id = ?", [json.dumps(spec), exp_id])
            changed += 1
    return changed


def _timestamp(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc).replace(tzinfo=None)
