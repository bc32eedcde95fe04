"""A whole run without a server, on a tiny model: planted secrets never reach the saved
dataset, the training log, run.json or the adapter's codeloop.json; the run resumes."""
from __future__ import annotations

import json

from tests.trainer.acme_repo import build_acme_repo, git
from trainer.config import DataConfig, EvalConfig, TrainConfig, TrainerSettings
from trainer.pipeline import RunPaths, run_training

PLANTED = {
    "aws": "AKIA" + "QWERTYUIOPASDFGH",
    "github": "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8",
    "url_password": "s3cr3t-" + "Pa55w0rd-xyz",
    "assigned": "q8Zr" + "T4mW9pLx2Vb7Nc",
}
CONFIG = f'''"""Settings of the acme service."""
AWS_ACCESS_KEY_ID = "{PLANTED['aws']}"
GITHUB_TOKEN = "{PLANTED['github']}"
DATABASE_URL = "postgres://svc:{PLANTED['url_password']}@db.internal:5432/acme"
client_secret = "{PLANTED['assigned']}"


def database_url():
    return DATABASE_URL
'''


def test_planted_secrets_never_reach_dataset_log_or_adapter(tiny_model, tmp_path):
    repo = build_acme_repo(tmp_path / "acme", ("orders", "users", "carts", "items", "teams", "plans", "roles", "audits"))
    (repo / "settings.py").write_text(CONFIG)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "settings", when=5)  # in the middle of history: trained on
    (repo / "settings.py").write_text(CONFIG.replace("acme service", "acme service (v2)"))
    git(repo, "commit", "-q", "-am", "settings v2", when=99)  # the newest: held out

    cfg = TrainerSettings(train=TrainConfig(max_steps=2, rank=4, alpha=8, batch_size=4),
                          data=DataConfig(max_seq_tokens=128, min_train_examples=8, min_eval_examples=2, telemetry=False),
                          eval=EvalConfig(max_examples=4, max_new_tokens=8))
    paths = RunPaths(model_dir=tiny_model, run_dir=tmp_path / "runs" / "r1", adapters_dir=tmp_path / "adapters")
    report = run_training(cfg, paths, [repo], None, progress=False, echo=lambda _: None)

    assert report.status == "done" and report.adapter == "team@1"
    assert report.publish["action"] == "not_published"  # no server to publish to
    assert sum(report.mining["secrets_scrubbed"].values()) >= 4
    written = [p for p in [*paths.run_dir.rglob("*"), *paths.adapters_dir.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".arrow" for p in written) and any(p.name == "train_log.jsonl" for p in written)
    for path in written:
        data = path.read_bytes()
        for kind, secret in PLANTED.items():
            assert secret.encode() not in data, f"{kind} secret found in {path}"
    meta = json.loads((paths.adapters_dir / "team@1" / "codeloop.json").read_text())
    assert meta["fim_template"] == "prefix-only" and meta["provenance"]["repositories"]["acme"]["commits"] == 1 + 16 + 2
    assert set(meta["metrics"]) == {"base", "candidate"}

    again = run_training(cfg, RunPaths(model_dir=tiny_model, run_dir=paths.run_dir, adapters_dir=paths.adapters_dir),
                         [], None, progress=False, echo=lambda _: None)  # the same run folder: resumed
    assert again.training["resumed_from"] == 2 and again.adapter == "team@2"
    assert again.split["data_hash"] == report.split["data_hash"]
