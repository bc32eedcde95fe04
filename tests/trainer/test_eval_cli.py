"""`codeloop eval` against the real shared server on a repository built here: which lines
are asked, that the counting agrees with the server's own answers, and its errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.acme_repo import git
from trainer.heldout import held_out_lines
from trainer.repo_eval import score_line

pytestmark = pytest.mark.slow

OLD = '''"""Shapes."""


def area(width, height):
    return width * height
'''
NEW_FUNCTION = '''

def perimeter(width, height):
    # two of each side
    total = 2 * (width + height)

    return total
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Commit at day 0; at day 10 a file gains a function; at day 11 another file is added."""
    repo = tmp_path_factory.mktemp("eval-repo")
    git(repo, "init", "-q", "-b", "main")
    (repo / "shapes.py").write_text(OLD)
    (repo / "README.md").write_text("# not source\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "shapes", when=0)
    (repo / "shapes.py").write_text(OLD + NEW_FUNCTION)
    git(repo, "commit", "-q", "-am", "perimeter", when=240)
    (repo / "names.py").write_text('NAMES = ["ada", "grace"]\nFIRST = NAMES[0]\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "names", when=264)
    return repo


SINCE = "2023-11-20"  # 1_700_000_000 is 2023-11-14T22:13Z; day 10 is after this date, day 0 before


def test_held_out_lines_are_cut_where_an_editor_asks(repo):
    lines = held_out_lines(repo, SINCE, per_file=10)
    by_text = {h.expected: h for h in lines}
    # comment-only and blank lines are never asked; README.md is not source
    assert set(by_text) == {"def perimeter(width, height):", "total = 2 * (width + height)", "return total",
                            'NAMES = ["ada", "grace"]', "FIRST = NAMES[0]"}
    total = by_text["total = 2 * (width + height)"]
    assert total.prefix.endswith("def perimeter(width, height):\n    # two of each side\n    ")  # after the indent
    assert total.suffix.startswith("\n\n    return total")
    assert total.path == "shapes.py" and total.language == "python" and total.line == 10
    assert held_out_lines(repo, SINCE, per_file=1, seed=3) == held_out_lines(repo, SINCE, per_file=1, seed=3)
    assert len(held_out_lines(repo, SINCE, per_file=1)) == 2  # one per file per commit


def test_score_line():
    assert score_line("return total\n    x", "return total") == (True, 1.0)
    exact, sim = score_line("return tot", "return total")
    assert not exact and 0.8 < sim < 1.0


def codeloop(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODELOOP_DATA_DIR": str(server.data_dir), "CODELOOP_CONFIG": str(server.data_dir / "codeloop.toml")}
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], env=env, capture_output=True, text=True, timeout=600)


def test_eval_counts_agree_with_the_servers_answers(server, repo, tmp_path, make_adapter):
    from tests.conftest import install_adapter
    import httpx

    folder = install_adapter(make_adapter(seed=11, scale=2.0), server.adapters_dir, "eval-probe@1")
    httpx.post(server.url + "/v1/adapters", json={"name": "eval-probe@1", "path": str(folder)}, timeout=120).raise_for_status()
    answers = tmp_path / "answers.jsonl"
    done = codeloop(server, "eval", "--repo", str(repo), "--since", SINCE, "--adapter", "eval-probe@1", "--per-file", "10",
                    "--server", server.url, "--json", "--quiet", "--answers", str(answers))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 2 * 2 * 5  # two models, each with its repository context and without
    assert {r["model"] for r in rows} == {"base", "base+no-context", "eval-probe@1", "eval-probe@1+no-context"}
    labels = [(c["model"], c["against"]) for c in report["comparisons"]]
    assert labels == [("eval-probe@1", "base"), ("eval-probe@1+no-context", "base+no-context"),
                      ("base", "base+no-context"), ("eval-probe@1", "eval-probe@1+no-context")]
    for model in ("base", "eval-probe@1"):
        mine = [r for r in rows if r["model"] == model]
        summary = next(m for m in report["models"] if m["model"] == model)
        exact = [score_line(r["answer"], r["expected"])[0] for r in mine]
        assert summary["n"] == 5 and summary["exact_match"] == round(sum(exact) / 5, 4)
        assert summary["exact_match_ci"][0] <= summary["exact_match"] <= summary["exact_match_ci"][1]
    base = [score_line(r["answer"], r["expected"])[0] for r in rows if r["model"] == "base"]
    probe = [score_line(r["answer"], r["expected"])[0] for r in rows if r["model"] == "eval-probe@1"]
    cmp = report["comparisons"][0]
    assert cmp["model"] == "eval-probe@1" and cmp["against"] == "base" and cmp["n"] == 5
    assert cmp["cand_only"] == sum(p and not b for b, p in zip(base, probe))
    assert cmp["base_only"] == sum(b and not p for b, p in zip(base, probe))
    assert 0.0 <= cmp["p_value"] <= 1.0

    table = codeloop(server, "eval", "--repo", str(repo), "--since", SINCE, "--server", server.url, "--quiet", "--n", "2")
    assert table.returncode == 0 and "exact match" in table.stdout and table.stdout.count("\nbase" + " " * 10) == 1
    assert table.stdout.count("\nbase+no-context" + " " * 10) == 1 and "\nbase vs base+no-context:" in table.stdout


def test_eval_errors_are_clear(server, repo, tmp_path):
    cases = [
        (["--repo", str(tmp_path), "--since", SINCE], "not a git repository"),
        (["--repo", str(repo), "--since", "2030-01-01"], "no added source lines"),
        (["--repo", str(repo), "--since", "yesterday"], "is not a date"),
        (["--repo", str(repo), "--since", SINCE, "--adapter", "nope@9"], "has no adapter 'nope@9'"),
    ]
    for args, message in cases:
        done = codeloop(server, "eval", *args, "--server", server.url, "--quiet")
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    down = codeloop(server, "eval", "--repo", str(repo), "--since", SINCE, "--server", "http://127.0.0.1:9")
    assert down.returncode == 2 and "no codeloop server answers at http://127.0.0.1:9" in down.stderr
