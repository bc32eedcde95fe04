"""A/B experiments through the real server and the CLI: assignment, conflicts, report, stop."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timezone

import httpx
import pytest

from tests.conftest import install_adapter

PROMPT = {"prefix": "def greet(name):\n", "suffix": "", "language": "python"}


def post(server, path, body=None):
    return httpx.post(server.url + path, json=body, timeout=120)


def ask(server, user: str | None, **extra) -> dict:
    r = post(server, "/v1/completions", {"segments": PROMPT, "max_tokens": 3, "user": user, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def cli(server, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODELOOP_CONFIG": os.devnull}
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args, "--server", server.url],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def arm_adapter(server, make_adapter):
    folder = install_adapter(make_adapter(21), server.adapters_dir, "exp-arm-1")
    r = post(server, "/v1/adapters", {"name": "exp-arm@1", "path": str(folder)})
    assert r.status_code in (201, 409), r.text
    return "exp-arm@1"


def test_experiment_lifecycle(server, arm_adapter):
    users = [f"user-{i}" for i in range(12)]
    r = post(server, "/v1/experiments", {"name": "Arm vs base", "arms": {"base": 50, arm_adapter: 50}, "users": users})
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["control"] == "base" and exp["status"] == "running"
    try:
        # A second experiment over some of the same users is refused; unloading an arm too.
        clash = post(server, "/v1/experiments", {"name": "clash", "arms": {"base": 1, arm_adapter: 1}, "users": users[:2]})
        assert clash.status_code == 409 and exp["id"] in clash.json()["error"]
        unload = httpx.delete(server.url + f"/v1/adapters/{arm_adapter}")
        assert unload.status_code == 409 and "experiment" in unload.json()["error"]

        # Each user always gets the same arm; users spread over both arms.
        seen = {}
        for user in users:
            first, second = ask(server, user), ask(server, user)
            assert first["experiment"] == exp["id"] == second["experiment"]
            assert first["arm"] == second["arm"] in ("base", arm_adapter)
            assert first["adapter"] == (None if first["arm"] == "base" else arm_adapter)
            seen[user] = first
        assert set(Counter(c["arm"] for c in seen.values())) == {"base", arm_adapter}
        outsider = ask(server, "someone-else")  # not covered: the live adapter, no experiment
        assert outsider["experiment"] is None and outsider["arm"] is None
        explicit = ask(server, users[0], adapter="base")  # naming an adapter opts out
        assert explicit["experiment"] is None

        # Outcomes: every suggestion shown; the adapter arm's accepted.
        stamp = datetime.now(timezone.utc).isoformat()
        batch = []
        for c in seen.values():
            batch.append({"completion_id": c["id"], "kind": "shown", "at": stamp})
            if c["arm"] != "base":
                batch.append({"completion_id": c["id"], "kind": "accepted", "at": stamp})
        assert post(server, "/v1/events", batch).status_code == 200

        report = httpx.get(server.url + f"/v1/experiments/{exp['id']}").json()
        arms = {a["name"]: a for a in report["arms"]}
        counts = Counter(c["arm"] for c in seen.values())
        assert arms["base"]["shown"] == counts["base"] and arms["base"]["accepted"] == 0
        assert arms[arm_adapter]["accepted"] == arms[arm_adapter]["shown"] == counts[arm_adapter]
        assert arms[arm_adapter]["wilson_low"] < 1.0 == arms[arm_adapter]["wilson_high"]
        assert arms["base"]["users"] == counts["base"]
        (comparison,) = report["comparisons"]
        assert comparison["arm"] == arm_adapter and comparison["effect"] == pytest.approx(1.0)
        assert 0 <= comparison["p_value"] < 0.05 and comparison["decision"] in ("continue", "difference")

        shown = cli(server, "experiment", "report", exp["id"])
        assert shown.returncode == 0, shown.stderr
        assert arm_adapter in shown.stdout and "always-valid p=" in shown.stdout
    finally:
        stopped = post(server, f"/v1/experiments/{exp['id']}/stop", {"promote": arm_adapter})
    assert stopped.status_code == 200 and stopped.json()["winner"] == arm_adapter
    assert httpx.get(server.url + "/v1/adapters").json()["live"] == arm_adapter
    assert ask(server, users[0])["experiment"] is None  # stopped: back to the live adapter
    assert post(server, f"/v1/experiments/{exp['id']}/stop").status_code == 409
    assert post(server, "/v1/adapters/base/promote").status_code == 200


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"name": "one arm", "arms": {"base": 1}}, 422, "at least two arms"),
        ({"name": "ghost", "arms": {"base": 1, "ghost@9": 1}}, 404, "not a loaded adapter"),
        ({"name": "zero", "arms": {"base": 0, "exp-arm@1": 1}}, 422, "positive"),
        ({"name": "ctl", "arms": {"base": 1, "exp-arm@1": 1}, "control": "other"}, 422, "control"),
        ({"name": "alpha", "arms": {"base": 1, "exp-arm@1": 1}, "alpha": 0.9}, 422, "alpha"),
    ],
)
def test_bad_experiments_are_refused(server, arm_adapter, body, status, needle):
    r = post(server, "/v1/experiments", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_unknown_experiment(server):
    assert httpx.get(server.url + "/v1/experiments/nope").status_code == 404
    assert post(server, "/v1/experiments/nope/stop").status_code == 404


def test_cli_start_and_stop(server, arm_adapter):
    name = f"cli-{uuid.uuid4().hex[:4]}"
    started = cli(server, "experiment", "start", "--name", name, "--arm", "base=1", "--arm", f"{arm_adapter}=1")
    assert started.returncode == 0, started.stderr
    exp_id = next(e["id"] for e in httpx.get(server.url + "/v1/experiments").json()["experiments"] if e["name"] == name)
    refused = cli(server, "experiment", "start", "--name", "again", "--arm", "base=1", "--arm", f"{arm_adapter}=1")
    assert refused.returncode == 2 and "running" in refused.stderr
    stopped = cli(server, "experiment", "stop", exp_id)
    assert stopped.returncode == 0 and f"stopped {exp_id}" in stopped.stdout
    bad = cli(server, "experiment", "start", "--name", "x", "--arm", "base=lots")
    assert bad.returncode == 2


async def test_concurrent_reports_each_count_as_one_look(server):
    """Each report is one look of the sequential test; readers at the same moment must not
    lose one another's look. With the state read before the report's queries are awaited and
    no lock (as the hardening issue found it), 16 readers all saw look 1."""
    user = f"looks-{uuid.uuid4().hex[:6]}"
    r = post(server, "/v1/experiments", {"name": "looks", "arms": {"base": 1, "base+no-context": 1}, "users": [user]})
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            answers = await asyncio.gather(*(client.get(f"/v1/experiments/{exp_id}") for _ in range(16)))
        assert all(a.status_code == 200 for a in answers)
        seen = sorted(a.json()["comparisons"][0]["state"]["looks"] for a in answers)
        assert seen == list(range(1, 17))  # every reader had a look of its own
        again = httpx.get(f"{server.url}/v1/experiments/{exp_id}", timeout=30).json()
        assert again["comparisons"][0]["state"]["looks"] == 17
    finally:
        post(server, f"/v1/experiments/{exp_id}/stop", {})
