"""Does the loop learn a real codebase? Train on a repository's history before a date, then
ask the running server for lines added after it, as a user would (README "Learning").

    python bench/learning.py ../shared/repos/httpx.bundle --since 2024-01-01
    python bench/learning.py /path/to/checkout --since 2025-06-01 --max-minutes 60 --n 200

REPO is a git bundle or a repository; it is cloned into a temporary folder (a bundle without
HEAD is checked out at its only branch). Then, with a fresh data directory and a real
`codeloop serve` on the default model:
  1. `codeloop train --repo CLONE --publish none` with trainer.data.holdout_since = SINCE and
     the given step/time budget (the commits from SINCE on are never trained on);
  2. the adapter is registered on the server;
  3. `codeloop eval --repo CLONE --since SINCE --adapter NAME --n N --json`.
Prints training time and examples, the eval table and the gain (also as JSON with --json),
and how many held-out lines already stood, verbatim, somewhere in the repository at the cut
(what learning the repository can recall) against those that were new, with each model's
exact matches in both groups.
`--token-healing off` measures the server without token healing (codeloop/token_healing.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, wait_healthy  # noqa: E402  (the same start-up check as the tests)


def clone(source: Path, into: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(source), str(into)], check=False, capture_output=True)
    if subprocess.run(["git", "-C", str(into), "rev-parse", "-q", "--verify", "HEAD"], capture_output=True).returncode != 0:
        heads = subprocess.run(["git", "-C", str(into), "branch", "-r", "--format=%(refname:short)"],
                               capture_output=True, text=True).stdout.split()
        if not heads:
            sys.exit(f"bench: {source} has no branch to check out")
        subprocess.run(["git", "-C", str(into), "checkout", "-q", "-B", "main", heads[0]], check=True)
    return into


def lines_at(repo: Path, commit: str) -> set[str]:
    """Every stripped line of every file at `commit`."""
    from trainer.mining import _BlobReader

    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "-z", commit],
                           capture_output=True, check=True).stdout.decode("utf-8", "replace").split("\0")
    known: set[str] = set()
    with _BlobReader(repo) as blobs:
        for path in filter(None, files):
            data = blobs.read(f"{commit}:{path}")
            if data is not None:
                known.update(line.strip() for line in data.decode("utf-8", "replace").splitlines())
    return known


def verbatim_at_cut(repo: Path, since: str, answers: Path) -> dict:
    """Held-out lines found (stripped) in some file of the repository at the last commit before
    `since`, and each model's exact matches among those and among the new ones."""
    from trainer.dataset import parse_date
    from trainer.snapshot import commit_before

    known = lines_at(repo, commit_before(repo, parse_date(since)))
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    out: dict = {}
    for row in rows:
        group = "in_repository" if row["expected"].strip() in known else "new"
        model = out.setdefault(row["model"], {"in_repository": [0, 0], "new": [0, 0]})
        model[group][0] += row["answer"].strip() == row["expected"].strip()
        model[group][1] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--since", required=True)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--max-minutes", type=float, default=60.0)
    ap.add_argument("--n", type=int, default=150, help="held-out lines asked")
    ap.add_argument("--model", default="", help="model folder (default: the default model, prepared in the data dir)")
    ap.add_argument("--data-dir", type=Path, help="keep the run here (default: a temporary folder)")
    ap.add_argument("--token-healing", choices=["on", "off"], default="on")
    ap.add_argument("--set", action="append", default=[], metavar="ENV=VALUE",
                    help="extra settings, e.g. CODELOOP_TRAINER__TRAIN__LR=1e-3 (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="codeloop-learning-"))
    data_dir = args.data_dir or work / "data"
    repo = clone(args.repo.resolve(), work / args.repo.stem)
    cli = [sys.executable, "-m", "codeloop.cli"]
    port = free_port()
    env = {**os.environ, "CODELOOP_DATA_DIR": str(data_dir), "CODELOOP_PORT": str(port),
           "CODELOOP_CONFIG": os.devnull, "CODELOOP_LOG_LEVEL": "warning",
           # The README's figures are on transformers; the default, auto, would
           # pick llama-cpp where it is installed. --set CODELOOP_ENGINE=llama-cpp to measure that.
           "CODELOOP_ENGINE": "transformers",
           "CODELOOP_TOKEN_HEALING": "true" if args.token_healing == "on" else "false",
           "CODELOOP_TRAINER__DATA__HOLDOUT_SINCE": args.since,
           # The trainer's own table: a few lines only; `codeloop eval` below is the measure.
           "CODELOOP_TRAINER__EVAL__MAX_EXAMPLES": "20", "CODELOOP_TRAINER__DATA__TELEMETRY": "false"}
    if args.model:
        env["CODELOOP_MODEL"] = args.model
    env.update(dict(kv.split("=", 1) for kv in args.set))
    data_dir.mkdir(parents=True, exist_ok=True)
    if not args.model:
        subprocess.run([*cli, "model", "prepare", "--no-check"], env=env, check=True, capture_output=True)
    log = open(data_dir / "server.log", "ab")
    server = subprocess.Popen([*cli, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy("server", server, url + "/healthz", lambda: (data_dir / "server.log").read_text(), 300, server.kill)
        started = time.monotonic()
        train = subprocess.run([*cli, "train", "--repo", str(repo), "--publish", "none", "--server", url, "--quiet",
                                "--max-steps", str(args.max_steps), "--max-minutes", str(args.max_minutes)],
                               env=env, capture_output=True, text=True)
        train_s = time.monotonic() - started
        print(train.stdout[-3000:], file=sys.stderr)
        if train.returncode != 0:
            sys.exit(f"bench: codeloop train failed:\n{train.stderr[-3000:]}")
        run = json.loads(max((data_dir / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime).read_text())
        name = run["adapter"]
        adapters = httpx.get(url + "/v1/adapters", timeout=30).json()
        if name not in {a["name"] for a in adapters["adapters"]}:
            httpx.post(url + "/v1/adapters", json={"name": name, "path": str(data_dir / "adapters" / name)}, timeout=120).raise_for_status()
        started = time.monotonic()
        ev = subprocess.run([*cli, "eval", "--repo", str(repo), "--since", args.since, "--adapter", name, "--n", str(args.n),
                             "--server", url, "--json", "--quiet", "--answers", str(data_dir / "answers.jsonl")],
                            env=env, capture_output=True, text=True)
        eval_s = time.monotonic() - started
        if ev.returncode != 0:
            sys.exit(f"bench: codeloop eval failed:\n{ev.stderr[-3000:]}")
        report = json.loads(ev.stdout)
    finally:
        server.terminate()
        server.wait(60)
    verbatim = verbatim_at_cut(repo, args.since, data_dir / "answers.jsonl")
    figures = {"repo": str(args.repo), "since": args.since, "token_healing": args.token_healing,
               "training": run["training"], "split": run["split"], "snapshot": run["mining"].get("snapshot"),
               "train_wall_s": round(train_s, 1), "eval_wall_s": round(eval_s, 1), "eval": report,
               "verbatim_at_cut": verbatim, "data_dir": str(data_dir)}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    from trainer.repo_eval import format_report

    t = run["training"]
    print(f"{args.repo.name} since {args.since}: {run['split']['train']} training examples "
          f"({(run['mining'].get('snapshot') or {})}), {t['steps']} steps in {t['seconds'] / 60:.1f} min "
          f"({t['tokens_per_s']} tokens/s, stopped by {t['stopped_by']}, final loss {t['final_loss']}); "
          f"whole `codeloop train` {train_s / 60:.1f} min; eval {eval_s / 60:.1f} min")
    print(format_report(report))
    for model, groups in verbatim.items():
        (hit_old, n_old), (hit_new, n_new) = groups["in_repository"], groups["new"]
        print(f"{model}: exact on {hit_old} of {n_old} lines that stood verbatim in the repository at the cut, "
              f"{hit_new} of {n_new} new lines")


if __name__ == "__main__":
    main()
