"""The proof that the loop learns, on the real default model, through real processes.

A git repository uses an internal API (`acme_auth`) that SmolLM2 cannot know. `codeloop
train` mines it, holds out the newest commits, trains a LoRA adapter, evaluates base and
candidate on the held-out commits, and publishes to a running `codeloop serve`, which then
completes a new service with the internal API. Then: publishing rules, telemetry as
training data, and `codeloop refresh` (thresholds, the lock, a kill -9 mid-run).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.trainer.acme_repo import build_acme_repo, prompt_for

pytestmark = pytest.mark.slow

# Sized for CI on 2 cores: ~180 training examples, 32 steps of 4 (2-5 minutes).
TRAINER_TOML = """
[trainer.train]
max_steps = 32
batch_size = 4
lr = 1e-3
warmup_steps = 3
checkpoint_every = 10

[trainer.data]
max_seq_tokens = 256
holdout_fraction = 0.12
min_train_examples = 32

[trainer.eval]
max_examples = 16
per_file = 3

[trainer.publish]
name = "acme"
min_gate_examples = 16  # all that are evaluated here (CI-sized): 6 right only with the candidate, 0 the other way, pass

[trainer.refresh]
min_new_commits = 1000
min_new_accepted = 1000
"""
INTERNAL_CALL = 'login(user, realm="acme-internal")'


@pytest.fixture(scope="module")
def loop(model_dir, tmp_path_factory):
    """Its own server (the loop promotes adapters; the shared server must not see that)."""
    root = tmp_path_factory.mktemp("loop")
    data = root / "data"
    data.mkdir()
    (data / "codeloop.toml").write_text(TRAINER_TOML)
    server = start_server(model_dir, data)
    yield server, build_acme_repo(root / "acme"), model_dir
    server.stop()


def codeloop(server, model_dir: Path, *args: str, timeout: float = 1200, wait: bool = True, log: Path | None = None):
    env = {**os.environ, "CODELOOP_DATA_DIR": str(server.data_dir), "CODELOOP_MODEL": str(model_dir),
           "CODELOOP_PORT": server.url.rsplit(":", 1)[1], "CODELOOP_CONFIG": str(server.data_dir / "codeloop.toml")}
    cmd = [sys.executable, "-m", "codeloop.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def adapters(server) -> dict:
    return httpx.get(server.url + "/v1/adapters", timeout=30).json()


def complete(server, prefix: str, adapter: str | None = None) -> str:
    body = {"segments": {"prefix": prefix, "suffix": "", "filepath": "services/x.py", "language": "python"},
            "max_tokens": 24, "temperature": 0}
    if adapter:
        body["adapter"] = adapter
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def trained(loop):
    server, repo, model_dir = loop
    done = codeloop(server, model_dir, "train", "--repo", str(repo), "--publish", "promote", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted((server.data_dir / "runs").iterdir())
    return json.loads((runs[-1] / "run.json").read_text()), done.stdout


def test_trained_adapter_beats_base_on_held_out_commits_and_serves_the_internal_api(loop, trained):
    server, repo, _ = loop
    report, stdout = trained
    base, cand = report["evaluation"]["base"], report["evaluation"]["candidate"]
    figures = (f"held-out next-line exact match through the server: base {base['exact_match_line']:.2f} -> candidate "
               f"{cand['exact_match_line']:.2f} (n={cand['n']}); edit similarity {base['edit_sim_line']:.2f} -> "
               f"{cand['edit_sim_line']:.2f}; {report['training']['tokens_per_s']} training tokens/s over "
               f"{report['training']['steps']} steps; gate: {report['publish']['reason']}")
    print(figures)
    assert cand["n"] == base["n"] == 16
    assert cand["exact_match_line"] >= base["exact_match_line"] + 0.3, figures
    assert "exact match (line)" in stdout  # the table is printed

    state = adapters(server)
    assert state["live"] == "acme@1" == report["adapter"] and report["publish"]["action"] == "promoted"
    meta = next(a for a in state["adapters"] if a["name"] == "acme@1")
    assert meta["fim_template"] == "prefix-only"  # no FIM tokens in SmolLM2: the format it knows
    prov = meta["metadata"]["provenance"]
    assert prov["data_hash"] == report["split"]["data_hash"] and prov["hyperparameters"]["train"]["rank"] == 16
    assert prov["repositories"]["acme"]["commits"] == 1 + 2 * 40 and prov["code_version"].startswith("0.")
    assert meta["metadata"]["metrics"]["candidate"]["exact_match_line"] == cand["exact_match_line"]
    assert meta["metadata"]["gate"]["decision"] == "promote" and meta["metadata"]["gate"]["n"] == 16

    prefix, _ = prompt_for("gizmos")  # a service no commit has
    live_text = complete(server, prefix)
    base_text = complete(server, prefix, adapter="base")
    assert INTERNAL_CALL in live_text, f"live adapter wrote {live_text!r}"
    assert "acme-internal" not in base_text, f"base model wrote {base_text!r}"


def test_publish_rules(loop, trained):
    """Not better than live: not promoted (not even loaded). Asked for an A/B test: started."""
    from trainer.config import PublishConfig
    from trainer.publish import publish, write_adapter
    from codeloop.api_client import ApiClient

    server, _, _ = loop
    before = adapters(server)
    source = Path(trained[0]["training"]["adapter_dir"])
    folder = write_adapter(source, server.adapters_dir, "acme@2", {"fim_template": "prefix-only"})
    api = ApiClient(server.url)
    live_right, cand_right = [True] * 60 + [False] * 40, [True] * 50 + [False] * 50
    worse = {label: {"exact_match_line": sum(right) / 100, "per_example": {
        "exact_match_line": right, "edit_sim_line": [1.0 if r else 0.5 for r in right]}}
        for label, right in (("live", live_right), ("candidate", cand_right))}
    decision = publish(api, "acme@2", folder, "acme@1", worse, PublishConfig(action="promote"))
    assert decision.action == "not_published" and "vs live (acme@1) 0.600" in decision.reason, decision.reason
    assert adapters(server) == before

    decision = publish(api, "acme@2", folder, "acme@1", worse, PublishConfig(action="experiment"))
    assert decision.action == "experiment" and decision.experiment_id
    exp = httpx.get(f"{server.url}/v1/experiments/{decision.experiment_id}", timeout=30).json()["experiment"]
    assert exp["arms"] == {"acme@2": 0.5, "acme@1": 0.5} and exp["control"] == "acme@1"
    assert adapters(server)["live"] == "acme@1"
    httpx.post(f"{server.url}/v1/experiments/{decision.experiment_id}/stop", timeout=30).raise_for_status()
    api.close()


def test_accepted_suggestions_become_weighted_examples_with_secrets_scrubbed(loop, tmp_path):
    from trainer.config import DataConfig
    from codeloop.api_client import ApiClient
    from trainer.telemetry_data import examples_from_export

    server, _, _ = loop
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    ids = []
    for prefix in (f'GITHUB_TOKEN = "{secret}"\n\ndef kept(x):\n    ', "def dropped(x):\n    "):
        r = httpx.post(server.url + "/v1/completions", json={"segments": {"prefix": prefix, "suffix": ""}, "max_tokens": 4,
                                                              "user": "u1", "adapter": "base"}, timeout=120)
        ids.append(r.json()["id"])
    events = [{"completion_id": ids[0], "kind": "shown"}, {"completion_id": ids[0], "kind": "accepted"},
              {"completion_id": ids[0], "kind": "retained", "retained_ratio": 1.0, "age_s": 30},
              {"completion_id": ids[1], "kind": "shown"}, {"completion_id": ids[1], "kind": "rejected"}]
    httpx.post(server.url + "/v1/events", json=events, timeout=30).raise_for_status()
    api = ApiClient(server.url)
    deadline = time.monotonic() + 30
    while True:  # the server's writer batches: wait until both outcomes are exported
        examples, counts = examples_from_export(api.export(tmp_path / "t.parquet"), DataConfig())
        if counts["accepted"] and counts["rejected"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    api.close()
    accepted = [e for e in examples if e.kind == "accepted"]
    rejected = [e for e in examples if e.kind == "rejected"]
    assert [e.commit for e in accepted] == [ids[0]] and [e.commit for e in rejected] == [ids[1]]
    assert accepted[0].weight == 1.0 and accepted[0].source == "telemetry"  # fully retained
    # The server scrubbed it before storing (feedback/privacy.py); the trainer scrubs again anyway.
    assert secret not in json.dumps([e.to_row() for e in examples])
    assert "<SECRET:github_token>" in accepted[0].prefix


def test_refresh_waits_for_enough_new_data(loop, trained):
    server, repo, model_dir = loop
    done = codeloop(server, model_dir, "refresh", "--repo", str(repo), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "nothing to do: 81 new commits (need 1000)" in done.stdout
    assert not (server.data_dir / "trainer" / "refresh.json").exists()


def test_refresh_takes_a_lock(loop):
    from trainer.refresh import refresh_lock

    server, repo, model_dir = loop
    with refresh_lock(server.data_dir / "trainer"):
        done = codeloop(server, model_dir, "refresh", "--repo", str(repo), "--force", timeout=300)
    assert done.returncode == 0 and "another refresh is running" in done.stdout, done.stdout + done.stderr


def test_refresh_killed_mid_run_leaves_live_adapter_and_registry_untouched(loop, trained, tmp_path):
    server, repo, model_dir = loop
    before = adapters(server)
    folders = sorted(p.name for p in server.adapters_dir.iterdir() if not p.name.startswith("."))
    log = tmp_path / "refresh.log"
    proc = codeloop(server, model_dir, "refresh", "--repo", str(repo), "--force", wait=False, log=log)
    deadline = time.monotonic() + 600
    while "training:" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "refresh never started training"
        time.sleep(1)
    time.sleep(5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert adapters(server) == before
    assert sorted(p.name for p in server.adapters_dir.iterdir() if not p.name.startswith(".")) == folders
    assert not (server.data_dir / "trainer" / "refresh.json").exists()
    done = codeloop(server, model_dir, "refresh", "--repo", str(repo), timeout=300)  # the lock died with it
    assert "nothing to do" in done.stdout, done.stdout + done.stderr


def test_train_errors_are_clear(loop, tmp_path):
    server, _, model_dir = loop
    done = codeloop(server, model_dir, "train", "--repo", str(tmp_path), timeout=300)
    assert done.returncode == 2 and "not a git repository" in done.stderr
    done = codeloop(server, model_dir, "train", timeout=300)
    assert done.returncode == 2 and "--repo" in done.stderr
    small = build_acme_repo(tmp_path / "small", ("orders", "users"))
    done = codeloop(server, model_dir, "train", "--repo", str(small), "--no-telemetry", timeout=300)
    assert done.returncode == 2 and "too little data" in done.stderr and "need 32" in done.stderr
    done = codeloop(server, model_dir, "refresh", "--repo", str(small), "--every", "soon", timeout=300)
    assert done.returncode == 2 and "30m, 24h" in done.stderr
