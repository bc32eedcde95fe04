"""A/B experiments: arms → adapters with weights, stable per-user assignment, reports, stop.

A user is assigned by a stable hash of (experiment id, user), so one person sees one arm for
the whole experiment. Only one running experiment may cover a given user; a new one that
overlaps a running one is refused. Experiments are kept in the telemetry database
(feedback/experiment_rows.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass, field

from codeloop.names import BASE, split_arm
from feedback import experiment_rows, queries, stats
from server.adapters import AdapterRegistry
from server.errors import DomainError, Problem



class ExperimentError(DomainError):
    """An experiment request cannot be honoured; `problem` says why (server/errors.py)."""


@dataclass
class Experiment:
    id: str
    name: str
    arms: dict[str, float]  # adapter name ("base" = no adapter) -> weight
    control: str
    users: list[str] | None = None  # None = everyone
    alpha: float = 0.05
    status: str = "running"
    created_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    winner: str | None = None
    sequential_state: dict = field(default_factory=dict)  # arm -> stats.SequentialState dict

    def covers(self, user: str) -> bool:
        return self.users is None or user in self.users

    def overlaps(self, other: "Experiment") -> bool:
        if self.users is None or other.users is None:
            return True
        return bool(set(self.users) & set(other.users))

    def assign(self, user: str) -> str:
        """The arm for this user: a stable hash mapped onto the cumulative weights."""
        digest = hashlib.sha256(f"{self.id}\0{user}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(self.arms.values())
        for arm in sorted(self.arms):  # sorted: the mapping must not depend on dict order
            point -= self.arms[arm]
            if point < 0:
                return arm
        return sorted(self.arms)[-1]


class ExperimentManager:
    def __init__(self, registry: AdapterRegistry, writer):
        self.registry = registry
        self.writer = writer  # feedback.writer.TelemetryWriter
        self.experiments: dict[str, Experiment] = {}
        # Each report is one look of the sequential test: two at once would both read the
        # state, and the later save would lose the earlier look (and its decision).
        self._looks: dict[str, asyncio.Lock] = {}

    def restore(self) -> None:
        with closing(self.writer.reader()) as cursor:
            rows = experiment_rows.read_all(cursor)
        for r in rows:
            self.experiments[r.id] = Experiment(
                id=r.id, name=r.name, arms=r.weights, users=r.users, control=r.control, status=r.status,
                created_at=r.created_at, stopped_at=r.stopped_at, winner=r.winner, alpha=r.alpha,
                sequential_state=r.sequential_state)

    def forget_user(self, user: str) -> None:
        """Take the user off every `users` list here; feedback.privacy.forget_user does it in
        the database. First here, so that no later save writes the name back."""
        for exp in self.experiments.values():
            if exp.users and user in exp.users:
                exp.users = [u for u in exp.users if u != user]

    def running(self) -> list[Experiment]:
        return [e for e in self.experiments.values() if e.status == "running"]

    def adapters_in_use(self) -> set[str]:
        return {split_arm(arm)[0] for e in self.running() for arm in e.arms}

    def route(self, user: str | None) -> tuple[Experiment, str] | None:
        """(experiment, arm) for a user covered by a running experiment, else None."""
        if not user:
            return None
        for exp in self.running():
            if exp.covers(user):
                return exp, exp.assign(user)
        return None

    async def start(self, name: str, arms: dict[str, float], control: str | None, users: list[str] | None, alpha: float) -> Experiment:
        if len(arms) < 2:
            raise ExperimentError(Problem.INVALID, "an experiment needs at least two arms, e.g. {\"team-py@6\": 50, \"team-py@7\": 50}")
        for arm, weight in arms.items():
            adapter = split_arm(arm)[0]
            if adapter != BASE and adapter not in self.registry.records:
                raise ExperimentError(Problem.NOT_FOUND, f"arm {arm!r} is not a loaded adapter; load it first (POST /v1/adapters)")
            if not weight > 0:
                raise ExperimentError(Problem.INVALID, f"arm {arm!r} has weight {weight}; weights must be positive")
        if control is None:
            control = self.registry.live if self.registry.live in arms else (BASE if BASE in arms else sorted(arms)[0])
        if control not in arms:
            raise ExperimentError(Problem.INVALID, f"control {control!r} is not one of the arms {sorted(arms)}")
        if not 0 < alpha < 0.5:
            raise ExperimentError(Problem.INVALID, f"alpha={alpha} must be between 0 and 0.5")
        exp = Experiment(id=_new_id(name), name=name, arms=dict(arms), control=control, users=users, alpha=alpha)
        for other in self.running():
            if exp.overlaps(other):
                raise ExperimentError(Problem.CONFLICT, f"experiment {other.id!r} is running for some of the same users; stop it first or give disjoint 'users'")
        self.experiments[exp.id] = exp
        await self._save(exp)
        return exp

    def get(self, exp_id: str) -> Experiment:
        if exp_id not in self.experiments:
            raise ExperimentError(Problem.NOT_FOUND, f"no experiment {exp_id!r}; GET /v1/experiments lists them")
        return self.experiments[exp_id]

    async def report(self, exp_id: str) -> dict:
        """Per-arm counts and statistics; each report is one 'look' of the sequential test."""
        exp = self.get(exp_id)
        async with self._looks.setdefault(exp.id, asyncio.Lock()):
            return await self._look(exp)

    async def _look(self, exp: Experiment) -> dict:
        with closing(self.writer.reader()) as cursor:
            counts = {row.arm: asdict(row) for row in await asyncio.to_thread(queries.arm_counts, cursor, exp.id)}
            per_user = await asyncio.to_thread(queries.arm_user_counts, cursor, exp.id)
        # Users are randomised but suggestions are counted: the tests get counts shrunk by
        # each arm's design effect (see stats.effective_counts), the table the raw ones.
        effective = {arm: stats.effective_counts(per_user.get(arm, [])) for arm in exp.arms}
        pairs = {arm: (x, n) for arm, (x, n, _) in effective.items()}
        state = {arm: stats.SequentialState.from_dict(s) for arm, s in exp.sequential_state.items()}
        report = stats.compare_arms(pairs, exp.control, alpha=exp.alpha, state=state).to_dict()
        if exp.status == "running":
            exp.sequential_state = {c["arm"]: c["state"] for c in report["comparisons"]}
            await self._save(exp)
        for arm in report["arms"]:
            raw = counts.get(arm["name"], {})
            shown, accepted = raw.get("shown", 0), raw.get("accepted", 0)
            arm.update(shown=shown, accepted=accepted, rate=accepted / shown if shown else None,
                       design_effect=round(effective[arm["name"]][2], 3), users=raw.get("users", 0),
                       accepted_chars=raw.get("accepted_chars", 0), retained_chars=raw.get("retained_chars", 0))
        return {"experiment": _public(exp), **report}

    async def stop(self, exp_id: str, promote: str | None) -> Experiment:
        exp = self.get(exp_id)
        if exp.status != "running":
            raise ExperimentError(Problem.CONFLICT, f"experiment {exp_id!r} is already {exp.status}")
        if promote == "winner":
            promote = (await self.report(exp_id)).get("winner")
            if promote is None:
                raise ExperimentError(Problem.CONFLICT, "no arm has won yet (the sequential test has not decided); stop without promoting, or name the adapter")
        if promote is not None:
            if promote not in exp.arms:
                raise ExperimentError(Problem.INVALID, f"{promote!r} is not an arm of {exp_id!r}")
            # An arm without context promotes its adapter; context stays the editors' choice.
            await self.registry.promote(split_arm(promote)[0])
            exp.winner = promote
        exp.status, exp.stopped_at = "stopped", time.time()
        await self._save(exp)
        return exp

    async def _save(self, exp: Experiment) -> None:
        row = experiment_rows.ExperimentRow(
            id=exp.id, name=exp.name, weights=dict(exp.arms), users=exp.users, control=exp.control, status=exp.status,
            created_at=exp.created_at, stopped_at=exp.stopped_at, winner=exp.winner, alpha=exp.alpha,
            sequential_state=dict(exp.sequential_state))
        await _wait(self.writer.execute(lambda con: experiment_rows.save(con, row)))

    def public(self, exp: Experiment) -> dict:
        return _public(exp)


def _public(exp: Experiment) -> dict:
    return asdict(exp) | {"sequential_state": None}


def _new_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "exp"
    return f"{slug}-{uuid.uuid4().hex[:6]}"


async def _wait(future):
    return await asyncio.wrap_future(future)
