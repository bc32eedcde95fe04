"""Wire types of the HTTP API (DESIGN.md, "HTTP API of server/"). No logic lives here."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from codeloop.snippets import MAX_SNIPPET_CHARS, MAX_SNIPPET_PATH_CHARS, MAX_SNIPPETS

# Every stop string is looked for after every token: bounded, like the rest of a request.
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 256


class Snippet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filepath: str = Field(..., max_length=MAX_SNIPPET_PATH_CHARS, description="the file the text comes from, relative to the repository")
    text: str = Field(..., max_length=MAX_SNIPPET_CHARS, description="some of its lines")


class Segments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = Field(..., description="text before the cursor")
    suffix: str = Field("", description="text after the cursor")
    filepath: str | None = None
    language: str | None = Field(None, description="LSP language id, e.g. 'python'")
    snippets: list[Snippet] = Field(
        default_factory=list, max_length=MAX_SNIPPETS,
        description="repository context: other files' code, least relevant first (the client ranks it); "
                    "the prompt puts it before the prefix within its share of the token budget")


class CompletionRequest(BaseModel):
    """Either `segments` (editor form) or `prompt` (+ optional `suffix`, OpenAI form)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"segments": {"prefix": "def add(a, b):\n    return ", "suffix": "\n", "language": "python"}, "max_tokens": 4},
        {"prompt": "import os\n", "max_tokens": 4},
    ]})
    segments: Segments | None = None
    prompt: str | None = None
    suffix: str | None = None
    model: str | None = Field(None, description="OpenAI form: an adapter name, or 'base'")
    adapter: str | None = Field(None, description="adapter name; default: the live adapter")
    max_tokens: int | None = Field(None, ge=1, description="default: the server's default_max_tokens")
    max_latency_ms: int | None = Field(
        None, ge=1, le=600_000,
        description="stop generating this long after the request arrived and answer with what there is "
                    "(finish_reason 'length'); editors set it for automatic triggers")
    line_latency_ms: int | None = Field(
        None, ge=1, le=600_000,
        description="past this long after the request arrived, a multi-line answer ends with its next "
                    "complete line (finish_reason 'length'): its first lines soon rather than the whole "
                    "block late; editors set it for automatic triggers")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]] | Annotated[str, Field(max_length=MAX_STOP_CHARS)] | None = Field(
        None, description=f"at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_CHARS} characters")
    seed: int | None = None
    user: str | None = Field(None, max_length=200, description="a stable pseudonym of the person typing (A/B assignment)")
    client: str | None = Field(None, max_length=100, description="the editor and plugin, e.g. 'vscode/1.100 codeloop/0.1'")
    repo: str | None = Field(None, max_length=300, description="the repository the file belongs to")
    # Copilot-style clean-up of the suggestion (single/multi-line, suffix overlap, ...).
    postprocess: bool = True
    stream: bool = Field(False, description="answer as server-sent events in OpenAI's format: the suggestion "
                                           "in one event once it is post-processed, a last event with "
                                           "finish_reason, then [DONE]")

    @model_validator(mode="after")
    def _one_form(self) -> "CompletionRequest":
        if (self.segments is None) == (self.prompt is None):
            raise ValueError("give either 'segments' {prefix, suffix, ...} or 'prompt' (OpenAI form), not both or neither")
        if self.segments is not None and self.suffix is not None:
            raise ValueError("'suffix' belongs inside 'segments' in the segments form")
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"'stop' takes at most {MAX_STOP_STRINGS} strings (got {len(self.stop)})")
        if self.adapter and self.model and self.adapter != self.model:
            raise ValueError("'adapter' and 'model' name different adapters; give one")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]


class Choice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]


class Timings(BaseModel):
    queue_ms: float
    engine_ms: float
    total_ms: float
    first_token_ms: float | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    adapter: str | None
    experiment: str | None = None
    arm: str | None = None
    choices: list[Choice]
    usage: Usage
    timings: Timings


class AdapterLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="immutable version name, e.g. 'team-py@7'")
    path: str = Field(..., description="adapter folder, inside the server's adapter directory")


class AdapterInfo(BaseModel):
    name: str
    path: str
    sha256: str
    size_bytes: int
    base_model: str
    rank: int
    target_modules: list[str]
    created_at: float
    live: bool
    fim_template: str | None = None
    metadata: dict = {}
    store: str = ""  # the server's content-addressed copy the engine loads (<adapter_dir>/.store/<sha256>)


class AdapterList(BaseModel):
    base_model: str
    live: str | None
    adapters: list[AdapterInfo]


class Error(BaseModel):
    error: str
    detail: list | None = None


def refusals(*groups: dict[int, dict]) -> dict[int, dict]:
    """OpenAPI `responses` from several groups; a status code in more than one group is
    declared once, its descriptions joined (OpenAPI has one entry per code)."""
    merged: dict[int, dict] = {}
    for group in groups:
        for status, spec in group.items():
            if status in merged and "description" in merged[status] and "description" in spec:
                spec = {**spec, "description": f"{merged[status]['description']}; or {spec['description']}"}
            merged[status] = {**merged.get(status, {}), **spec}
    return merged


# Refusals of server/browser_guard.py, which sees every request first: a Host that does not
# name this server (any route), an Origin of another site (routes that change state).
HOST_REFUSALS = {400: {"model": Error, "description": "a Host header that does not name this server (setting allowed_hosts)"}}
WRITE_REFUSALS = {403: {"model": Error, "description": "sent by a web page of another origin"}}
# Refusals of server/limits.py's RequestBodyGuard, which sees every request with a body before
# its route does: routes that take a body declare them.
BODY_REFUSALS = refusals(HOST_REFUSALS, {
    400: {"model": Error, "description": "a JSON body that is not UTF-8"},
    413: {"model": Error, "description": "a body over max_request_bytes"},
    415: {"model": Error, "description": "a body not sent as `content-type: application/json`"}})


class ModelCard(BaseModel):
    """One entry of GET /v1/models, as vLLM lists its base model and LoRA adapters."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "codeloop"
    root: str
    parent: str | None = Field(None, description="the base model, for an adapter")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


EventKind = Literal["shown", "accepted", "partial", "rejected", "dismissed", "cancelled", "retained"]
MAX_EVENTS_PER_BATCH = 1000


class Event(BaseModel):
    """What became of a suggestion. Idempotent by (completion_id, kind, at): a client that may
    retry must send `at` (without it the server stamps the time it received the event)."""

    model_config = ConfigDict(extra="forbid")
    completion_id: str = Field(..., max_length=64)
    kind: EventKind
    at: datetime | None = None
    elapsed_ms: float | None = Field(None, ge=0, description="time since the suggestion was shown")
    accepted_chars: int | None = Field(None, ge=0, description="partial (required) or accepted (default: all)")
    retained_ratio: float | None = Field(None, ge=0, le=1, description="retained: share of accepted text still present")
    age_s: float | None = Field(None, ge=0, description="retained: seconds after the accept it was measured")


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(..., min_length=1, max_length=MAX_EVENTS_PER_BATCH)


def _inline_refs(schema: dict) -> dict:
    """A pydantic JSON schema with its `$defs` written in place: the OpenAPI document only
    holds (in components) the models that routes declare as parameters, and POST /v1/events
    parses its body itself."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


def events_body_schema() -> dict:
    """POST /v1/events' body: one event, `{"events": [...]}` or a list of events."""
    from pydantic import TypeAdapter

    batch = Annotated[list[Event], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]
    return _inline_refs(TypeAdapter(Event | EventBatch | batch).json_schema())


class EventsStored(BaseModel):
    received: int
    stored: int = Field(..., description="new events; the rest were already stored (idempotent)")
    durable: bool = Field(True, description="always true: the answer comes after the commit")


class UserForgotten(BaseModel):
    user: str
    completions: int = Field(..., description="completions deleted")
    events: int = Field(..., description="events of those completions deleted")
    experiments: int = Field(0, description="experiments whose `users` list named them (absent: none)")
    review_votes: int = Field(0, description="votes they cast in blind reviews, deleted (absent: none)")
    training_examples: int = Field(0, description="rows removed from training runs' datasets and exports (absent: none)")


class ExperimentStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=100)
    arms: dict[str, float] = Field(..., description="adapter name ('base' = no adapter) -> weight")
    control: str | None = Field(None, description="default: the live adapter if it is an arm")
    users: list[str] | None = Field(None, description="user pseudonyms covered; default everyone")
    alpha: float = 0.05


class ExperimentStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    promote: str | None = Field(None, description="an arm to make live, or 'winner'")


# Blind review (server/reviews.py). A review is stored whole, so every string is bounded.
MAX_REVIEW_TASKS = 1000
_INT32_MAX = 2**31 - 1  # DuckDB INTEGER columns


class ReviewTaskIn(BaseModel):
    """A held-out line and both adapters' answers for it."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., min_length=1, max_length=1000, description="the file, relative to the repository")
    language: str | None = Field(None, max_length=100, description="LSP language id, e.g. 'python' (CodeBLEU needs it)")
    commit: str | None = Field(None, max_length=100, description="the commit that added the line")
    line: int | None = Field(None, ge=1, le=_INT32_MAX, description="1-based line number of the cursor")
    prefix: str = Field(..., max_length=200_000, description="the file before the cursor, as the editor sent it")
    suffix: str = Field(..., max_length=200_000, description="the file after the cursor")
    expected: str = Field(..., max_length=20_000, description="what the author wrote; shown to a reviewer after their vote")
    answer_a: str = Field(..., max_length=20_000)
    answer_b: str = Field(..., max_length=20_000)


class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200, description="default: 'B vs A'")
    a: str = Field(..., min_length=1, max_length=200, description="adapter A ('base' = no adapter), e.g. the live one")
    b: str = Field(..., min_length=1, max_length=200, description="adapter B, e.g. the candidate")
    repo: str | None = Field(None, max_length=1000, description="where the tasks came from (free text)")
    since: str | None = Field(None, max_length=100)
    tasks: list[ReviewTaskIn] = Field(..., min_length=1, max_length=MAX_REVIEW_TASKS)


class ReviewVote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: int = Field(..., ge=1, le=_INT32_MAX)
    choice: Literal["left", "right", "tie", "skip"]
    reviewer: str | None = Field(None, max_length=200, description="auth off: who votes (required); auth on: ignored, "
                                                                    "the token's user votes")
