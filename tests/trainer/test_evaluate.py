"""Scoring of generated middles, and evaluation of base vs adapter on a tiny model."""
from __future__ import annotations

from trainer.config import DataConfig, EvalConfig
from trainer.evaluate import Candidate, edit_similarity, evaluate, score, table
from trainer.examples import Example
from trainer.prompts import serving_template, training_template


def test_edit_similarity():
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("kitten", "sitting") == 1 - 3 / 7


def test_score_next_line_and_middle():
    expected = ["\n    a = 1\n    b = 2\n", "x = 1\n"]
    generated = ["    a = 1\n    b = 3\n    c = 4", "y = 1"]
    s = score(generated, expected)
    assert s["exact_match_line"] == 0.5  # first: next line right; second: wrong
    assert s["exact_match_middle"] == 0.0  # first differs on its second line
    assert 0.5 < s["edit_sim_middle"] < 1.0 and s["n"] == 2
    assert score(["    a = 1\n    b = 2   \n\nextra"], ["    a = 1\n    b = 2\n"])["exact_match_middle"] == 1.0


def test_evaluate_base_and_adapter(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from trainer.config import TrainConfig
    from trainer.train import train_adapter

    tok = AutoTokenizer.from_pretrained(tiny_model)
    fim = training_template("auto", "llama", tok.get_vocab())
    examples = [Example(f"def f{i}(x):\n    ", "\n", f"return x + {i}\n", "fim", "t", "a.py", f"c{i}", float(i)) for i in range(6)]
    trained = train_adapter(tiny_model, tok, fim, examples, TrainConfig(max_steps=2, rank=4, alpha=8),
                            DataConfig(max_seq_tokens=64), tmp_path, progress=False)
    cands = [Candidate("base", None, serving_template(None, "llama", tok.get_vocab())),
             Candidate("candidate", tmp_path / "adapter", fim)]
    assert trained.adapter_dir == str(tmp_path / "adapter")
    results = evaluate(tiny_model, tok, cands, examples, EvalConfig(max_new_tokens=4, max_examples=4, batch_size=2),
                       DataConfig(max_seq_tokens=64), progress=False)
    assert set(results) == {"base", "candidate"}
    for r in results.values():
        assert r["n"] == 4 and r["loss"] > 0 and 0 <= r["edit_sim_line"] <= 1
    assert results["base"]["loss"] != results["candidate"]["loss"]  # the adapter is really applied
    assert "candidate" in table(results)
