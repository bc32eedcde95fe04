"""The time split, the too-little-data error and the saved datasets.Dataset."""
from __future__ import annotations

import pytest

from trainer.config import DataConfig
from trainer.dataset import TooLittleData, data_hash, load_examples, save_dataset, split_by_time
from trainer.examples import Example


def ex(i: int, kind: str = "fim", t: float | None = None) -> Example:
    return Example(prefix=f"p{i}", suffix="s", middle=f"m{i}", kind=kind, source="repo", path="a.py",
                   commit=f"c{i}", time=float(i if t is None else t))


def test_newest_commits_are_held_out_and_never_trained_on():
    examples = [ex(i) for i in range(20)] + [ex(100, "accepted", t=5), ex(101, "rejected")]
    split = split_by_time(examples, DataConfig(holdout_fraction=0.2, min_train_examples=1, min_eval_examples=1))
    assert [e.commit for e in split.eval] == [f"c{i}" for i in range(16, 20)]
    assert {e.commit for e in split.train} == {f"c{i}" for i in range(16)} | {"c100"}
    assert max(e.time for e in split.train if e.kind == "fim") < min(e.time for e in split.eval)
    assert [e.commit for e in split.negatives] == ["c101"]  # rejected: kept apart, not trained on


def test_accepted_suggestions_are_split_by_the_same_time():
    """A suggestion accepted at or after the cut may hold the held-out commits' code: never
    trained on, and counted."""
    commits = [ex(i) for i in range(10)]  # holdout_fraction 0.2: commits at t >= 8 held out
    accepted = [ex(100, "accepted", t=3), ex(101, "accepted", t=7.9), ex(102, "accepted", t=8), ex(103, "accepted", t=30)]
    split = split_by_time([*commits, *accepted], DataConfig(holdout_fraction=0.2, min_train_examples=1, min_eval_examples=1))
    assert split.holdout_from == 8.0
    assert sorted(e.commit for e in split.train if e.kind == "accepted") == ["c100", "c101"]
    assert all(e.kind == "fim" for e in split.eval)  # suggestions are not evaluated on either
    assert split.counts() == {"train": 8 + 2, "eval": 2, "negatives": 0, "telemetry_held_out": 2}

    dated = split_by_time([*commits, *accepted], DataConfig(holdout_since="1970-01-01T00:00:05", min_train_examples=1,
                                                            min_eval_examples=1))
    assert sorted(e.commit for e in dated.train if e.kind == "accepted") == ["c100"]
    assert dated.counts()["telemetry_held_out"] == 3


def test_holdout_since_a_date():
    day = 86400.0
    examples = [ex(i, t=1_767_225_600 + i * day) for i in range(10)]  # 2026-01-01 + i days
    split = split_by_time(examples, DataConfig(holdout_since="2026-01-08", min_train_examples=1, min_eval_examples=1))
    assert len(split.eval) == 3 and len(split.train) == 7


def test_too_little_data_says_how_much_there_is_and_is_needed():
    with pytest.raises(TooLittleData) as err:
        split_by_time([ex(i) for i in range(5)], DataConfig(min_train_examples=32))
    message = str(err.value)
    assert "4 training examples (need 32)" in message and "1 held-out" in message and "5 commits" in message


def test_bad_holdout_date_is_named():
    with pytest.raises(ValueError, match="holdout_since"):
        split_by_time([ex(i) for i in range(5)], DataConfig(holdout_since="last tuesday"))


def test_dataset_saved_and_loaded_back(tmp_path):
    split = split_by_time([ex(i) for i in range(10)], DataConfig(holdout_fraction=0.3, min_train_examples=1, min_eval_examples=1))
    save_dataset(split, tmp_path / "ds")
    assert load_examples(tmp_path / "ds", "train") == split.train
    assert load_examples(tmp_path / "ds", "eval") == split.eval
    assert data_hash(split.train) == data_hash(list(reversed(split.train)))
    assert data_hash(split.train) != data_hash(split.train[1:])
