"""Trainer configuration as data: one pydantic model per stage, all under `[trainer]` in
codeloop.toml (or CODELOOP_TRAINER__<STAGE>__<FIELD> in the environment).

    [trainer.train]
    lr = 2e-4
    max_steps = 200
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from codeloop.snippets import CONTEXT_CHARS, CONTEXT_SNIPPETS

# Folders whose code is someone else's: never trained on.
VENDORED_DIRS = (
    "vendor", "vendors", "third_party", "third-party", "thirdparty", "external", "extern",
    "node_modules", "site-packages", "bower_components", ".venv", "venv", "dist", "build",
    "__pycache__", ".git",
)
LOCK_FILES = (
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "Pipfile.lock",
    "Cargo.lock", "Gemfile.lock", "composer.lock", "go.sum", "uv.lock", "pdm.lock",
    "mix.lock", "flake.lock", "packages.lock.json",
)
# File extensions mined as source code, with the language id sent along.
SOURCE_EXTENSIONS = {
    ".py": "python", ".js": "javascript", ".jsx": "javascriptreact", ".ts": "typescript",
    ".tsx": "typescriptreact", ".go": "go", ".rs": "rust", ".java": "java", ".kt": "kotlin",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".cs": "csharp",
    ".rb": "ruby", ".php": "php", ".swift": "swift", ".scala": "scala", ".sh": "shellscript",
    ".lua": "lua", ".sql": "sql",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MiningConfig(_Strict):
    include: list[str] = []  # globs on the repository path; empty = every source file
    exclude: list[str] = []  # globs that drop a file even when included
    max_file_bytes: int = Field(200_000, ge=1024)
    max_line_chars: int = Field(400, ge=40)  # a line longer than this marks a minified file
    max_commits: int = Field(0, ge=0)  # newest N commits per repository; 0 = all
    # Author names or emails matching one of these (case-insensitive regexes) are bots.
    bot_authors: list[str] = [r"\[bot\]", r"^dependabot", r"^renovate", r"github-actions", r"^bot@", r"noreply@.*bot"]
    prefix_chars: int = Field(3000, ge=0)  # context kept around the middle
    suffix_chars: int = Field(1000, ge=0)
    max_middle_lines: int = Field(8, ge=1)  # a longer added hunk is split into pieces
    min_middle_chars: int = Field(4, ge=1)  # smaller added hunks teach nothing
    functions: bool = True  # also make signature+docstring -> body examples
    # Repository context for history's examples, built as the language server builds it
    # (codeloop/snippets.py) from the files changed with the hunk and those its file imports,
    # at the parent commit. 0 characters: none.
    context_chars: int = Field(CONTEXT_CHARS, ge=0, le=20_000)
    context_snippets: int = Field(CONTEXT_SNIPPETS, ge=0, le=16)
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1)  # Jaccard of 5-gram shingles


class DataConfig(_Strict):
    # The newest commits are held out: this share of them, or all after `holdout_since`.
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    holdout_since: str | None = None  # ISO date; overrides holdout_fraction
    min_train_examples: int = Field(32, ge=1)
    min_eval_examples: int = Field(4, ge=1)
    max_seq_tokens: int = Field(512, ge=64)
    # The repository at the cut, as windows of whole lines learned token by token
    # (trainer/snapshot.py): most of what a model learns per CPU minute comes from these.
    snapshot: bool = True
    window_chars: int = Field(1500, ge=200)  # about max_seq_tokens of code
    recent_commits: int = Field(50, ge=0)  # files these last commits touched are read twice
    # History's hunks at most this share of the training examples (sampled with the seed):
    # each teaches a few tokens per sequence, a window several hundred.
    history_share: float = Field(0.25, ge=0, le=1)
    suffix_share: float = Field(0.25, ge=0, le=0.9)
    context_share: float = Field(0.25, ge=0, le=0.9)  # of the prompt, at least, for snippets (as the server)
    telemetry: bool = True  # add accepted suggestions from the server's export
    # An accepted suggestion weighs 0.5 + 0.5 * its retained share (unknown retention: 0.75).
    min_retained_weight: float = Field(0.5, ge=0, le=1)


class TrainConfig(_Strict):
    rank: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1)
    # 0: dropout's random masks cost a fifth of a CPU step, and one pass over a repository
    # does not overfit (docs/benchmarks.md, bench/train_speed.py).
    dropout: float = Field(0.0, ge=0, lt=1)
    # Attention and MLP: the MLP holds what a model knows about names and APIs.
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # LoRA on the last N transformer layers only (0 = all): backward then stops N layers
    # from the top, so a CPU step costs less and a time budget reads more of the repository.
    top_layers: int = Field(0, ge=0)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(200, ge=1)
    epochs: float = Field(3.0, gt=0)  # stop after this many passes even if max_steps is larger
    max_minutes: float = Field(0.0, ge=0)  # 0 = no time budget
    gradient_checkpointing: bool = True
    # The base model's weights and matrix products: "auto" is bf16 on CUDA and on CPUs with
    # bf16 matrix units (Intel AMX), fp32 elsewhere (bf16 without them is many times slower).
    # LoRA weights and the optimizer stay fp32 either way.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 1234
    checkpoint_every: int = Field(50, ge=1)
    # auto: 4-bit NF4 QLoRA where CUDA is present, plain LoRA in fp32 on CPU (measured in
    # CPU-TRAINING.md: NF4 on CPU is no faster and hurts a small model). nf4 forces it.
    quantize: Literal["auto", "nf4", "none"] = "auto"
    # The prompt format learned: "auto" is the model's own FIM format, and prefix-only for a
    # model without FIM tokens (the format it already knows, so every step goes into the
    # code); "smollm-fim" teaches the default model FIM on its unused special tokens.
    fim_template: str = "auto"


class EvalConfig(_Strict):
    # Held-out lines asked through the server (as `codeloop eval` asks), at most this many;
    # the promote gate needs trainer.publish.min_gate_examples of them.
    max_examples: int = Field(150, ge=1)
    per_file: int = Field(2, ge=1)  # held-out lines at most per file per commit
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(8, ge=1)


class PublishConfig(_Strict):
    name: str = "team"  # adapters are published as NAME@VERSION
    # "review": a blind review of the candidate against the live adapter (trainer/review_tasks.py);
    # promoted only when the reviewers' verdict is that the candidate is better.
    action: Literal["promote", "experiment", "review", "none"] = "promote"
    experiment_share: float = Field(0.5, gt=0, lt=1)  # the candidate's share in an A/B test
    # Promote only when the candidate's held-out next-line exact match beats the live adapter's
    # (the base model's when none is live) significantly: McNemar's exact test p < gate_alpha
    # and the gain's bootstrap interval above zero, on at least min_gate_examples examples
    # (trainer.eval.max_examples bounds how many are evaluated), and by more than min_gain.
    min_gain: float = Field(0.0, ge=0)
    min_gate_examples: int = Field(100, ge=1)
    gate_alpha: float = Field(0.05, gt=0, lt=1)
    review_tasks: int = Field(100, ge=10)  # tasks of the blind review (at most trainer.eval.max_examples)
    review_wait_s: float = Field(3 * 24 * 3600.0, gt=0)  # how long the trainer waits for the reviewers
    review_poll_s: float = Field(30.0, gt=0)


class RefreshConfig(_Strict):
    repos: list[str] = []
    min_new_accepted: int = Field(200, ge=0)
    min_new_commits: int = Field(50, ge=0)


class TrainerSettings(_Strict):
    server_url: str = ""  # "" = this machine's server (http://host:port from settings)
    mining: MiningConfig = MiningConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    publish: PublishConfig = PublishConfig()
    refresh: RefreshConfig = RefreshConfig()
