"""The loop learns a real codebase, measured as a user would: `codeloop train` on a real
repository's history before a date, then `codeloop eval` asks the running server for lines
added after it. A small CPU budget (the full figure is bench/learning.py's, README
"Learning"); the assertion is a significant paired gain over the base model.

The repositories are git bundles outside the project (the team's shared folder); without
them this test is skipped with a loud reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BUNDLES = [Path(p) for p in (os.environ.get("CODELOOP_REPOS_DIR", ""), REPO.parent / "shared" / "repos",
                             Path("/work/shared/repos")) if p]
# Small enough for CI on 2 cores (about 8 minutes): httpx before 2024, 40 steps, 80 lines.
CASE = {"bundle": "httpx.bundle", "since": "2024-01-01", "steps": 40, "n": 80}


def bundle() -> Path | None:
    return next((d / CASE["bundle"] for d in BUNDLES if (d / CASE["bundle"]).is_file()), None)


@pytest.mark.skipif(bundle() is None, reason=f"!!! LEARNING ON A REAL REPOSITORY NOT TESTED: no {CASE['bundle']} in "
                                             f"{', '.join(map(str, BUNDLES))} (set CODELOOP_REPOS_DIR) !!!")
def test_training_on_history_before_a_date_beats_the_base_on_later_lines(model_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "learning.py"), str(bundle()), "--since", CASE["since"],
         "--max-steps", str(CASE["steps"]), "--n", str(CASE["n"]), "--model", str(model_dir),
         "--data-dir", str(tmp_path / "data"), "--json"],
        capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout)
    models = {m["model"]: m for m in figures["eval"]["models"]}
    cmp = figures["eval"]["comparisons"][0]
    summary = (f"{CASE['bundle']} since {CASE['since']}, {figures['training']['steps']} steps: exact match base "
               f"{models['base']['exact_match']:.3f} -> adapter {models[cmp['model']]['exact_match']:.3f} (gain "
               f"{cmp['exact_gain']:+.3f}, 95% [{cmp['exact_low']:+.3f}, {cmp['exact_high']:+.3f}], McNemar p "
               f"{cmp['p_value']:.3g}), edit similarity {cmp['edit_sim_gain']:+.3f}")
    print(summary)
    assert models["base"]["n"] == CASE["n"] and figures["training"]["steps"] == CASE["steps"]
    assert cmp["significant"], summary
