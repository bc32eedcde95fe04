"""Repository context for held-out lines and mined examples: the files changed with a line and
the files it imports, as they stood at the parent commit (a real git repository)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from trainer.config import MiningConfig
from trainer.heldout import held_out_lines
from trainer.mining import mine_repository

PRICING = "\n".join([
    "def compute_invoice_total(order_lines, tax_rate):",
    "    subtotal = sum(line.price * line.quantity for line in order_lines)",
    "    return round(subtotal * (1 + tax_rate), 2)",
    "",
]) + "\n"


def git(repo: Path, *args: str, date: str | None = None) -> None:
    env = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "Dev",
           "GIT_COMMITTER_EMAIL": "dev@example.com", "HOME": str(repo), "PATH": "/usr/bin:/bin"}
    if date:
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "shop"
    (repo / "billing").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "billing" / "__init__.py").write_text("")
    (repo / "billing" / "pricing.py").write_text(PRICING)
    (repo / "unrelated.py").write_text("def nothing_here():\n    pass\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "pricing", date="2024-01-01T12:00:00Z")
    # After the cut: a new caller, and in the same commit a change to pricing.py whose new
    # line must not leak into the caller's context (the editor did not have it yet).
    (repo / "billing" / "pricing.py").write_text(PRICING + "FUTURE_DISCOUNT_MARKER = 0.1\n")
    (repo / "checkout.py").write_text(
        "from billing.pricing import compute_invoice_total\n\n\ndef checkout(order_lines, tax_rate):\n"
        + "".join(f"    check_{i} = len(order_lines) > {i}\n" for i in range(6))  # the call lands in a later hunk piece
        + "    total = compute_invoice_total(order_lines, tax_rate)\n    return total\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "checkout", date="2024-03-01T12:00:00Z")
    return repo


def test_held_out_lines_get_the_imported_file_as_it_was_before_the_commit(tmp_path):
    repo = make_repo(tmp_path)
    lines = held_out_lines(repo, "2024-02-01", per_file=10)
    line = next(h for h in lines if h.path == "checkout.py" and h.expected.startswith("total ="))
    paths = {s.filepath for s in line.snippets}
    assert paths == {"billing/pricing.py"}
    text = "".join(s.text for s in line.snippets)
    assert "def compute_invoice_total(order_lines, tax_rate):" in text
    assert "FUTURE_DISCOUNT_MARKER" not in text  # the parent commit's version: no leak
    assert all(not h.snippets for h in held_out_lines(repo, "2024-02-01", per_file=10, context_chars=0))


def test_mined_examples_carry_the_same_context_and_it_can_be_turned_off(tmp_path):
    repo = make_repo(tmp_path)
    examples, _ = mine_repository(repo, MiningConfig(functions=False), progress=False)
    caller = [e for e in examples if e.path == "checkout.py" and "compute_invoice_total(order_lines" in e.middle]
    assert caller and all(e.snippets() for e in caller)
    assert {s.filepath for e in caller for s in e.snippets()} == {"billing/pricing.py"}
    assert "FUTURE_DISCOUNT_MARKER" not in caller[0].context
    plain, _ = mine_repository(repo, MiningConfig(functions=False, context_chars=0), progress=False)
    assert all(e.context == "" for e in plain)


def test_training_prompts_carry_the_snippets_within_their_share(tmp_path, smol_tokenizer):
    from codeloop.fim import TEMPLATES
    from trainer.config import DataConfig
    from trainer.train import encode_examples

    repo = make_repo(tmp_path)
    examples, _ = mine_repository(repo, MiningConfig(functions=False), progress=False)
    example = next(e for e in examples if e.snippets())
    data = DataConfig(max_seq_tokens=256)
    [encoded] = encode_examples([example], smol_tokenizer, TEMPLATES["prefix-only"], data)
    prompt = smol_tokenizer.decode(encoded.input_ids[: encoded.prompt_len])
    assert "# Compare this snippet from billing/pricing.py:" in prompt
    assert len(encoded.input_ids) <= 256
    [without] = encode_examples([example], smol_tokenizer, TEMPLATES["prefix-only"], DataConfig(max_seq_tokens=256, context_share=0))
    assert "Compare this snippet" not in smol_tokenizer.decode(without.input_ids)
