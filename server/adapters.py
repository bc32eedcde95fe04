"""Adapter registry: which LoRA adapters are loaded, which one is live, and their checks.

Names are immutable versions (`team-py@7`): a name is never reused for other weights, so a
request that names an adapter always gets those weights (vLLM issue #47724 is what happens
otherwise). The registry is saved to a JSON file so the same adapters come back after a
restart, each re-checked against the sha256 recorded when it was registered.

What the engine loads is the server's own copy, `<adapter_dir>/.store/<sha256>/` (content-
addressed, read-only): the folder a user registered may change or vanish afterwards, and the
weights served under a name stay the ones checked when it was registered.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codeloop.names import BASE
from server.engines import Engine, EngineError, EngineUnavailable, LoraLimits
from server.errors import DomainError, Problem

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(@[0-9]{1,9})?$")
# Loading a pickle runs code, so only safetensors weights are accepted.
WEIGHTS_FILE = "adapter_model.safetensors"
HASHED_FILES = ("adapter_config.json", WEIGHTS_FILE)  # what an engine reads, and the sha256 covers
STORE = ".store"


class AdapterError(DomainError):
    """A request about adapters cannot be honoured; `problem` says why (server/errors.py)."""


@dataclass
class AdapterRecord:
    name: str
    path: str
    sha256: str
    size_bytes: int
    base_model: str
    rank: int
    target_modules: list[str]
    created_at: float = field(default_factory=time.time)
    fim_template: str | None = None  # set by the trainer in codeloop.json
    metadata: dict = field(default_factory=dict)
    store: str = ""  # the server's copy the engine loads: <adapter_dir>/.store/<sha256>


def hash_folder(path: Path) -> str:
    """sha256 over the adapter's config and weights, in a fixed order."""
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        digest.update(name.encode())
        with open(path / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def store_copy(adapters_dir: Path, folder: Path, sha256: str) -> Path:
    """The content-addressed copy of `folder`'s config and weights (made if missing): CONFLICT
    when the files changed since `sha256` was taken (the copy is checked, not the source)."""
    target = adapters_dir / STORE / sha256
    if target.is_dir() and hash_folder(target) == sha256:
        return target
    tmp = adapters_dir / STORE / f".{sha256}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in HASHED_FILES:
        shutil.copyfile(folder / name, tmp / name, follow_symlinks=False)
        (tmp / name).chmod(0o400)  # never edited in place: a changed file would be another adapter
    if hash_folder(tmp) != sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AdapterError(Problem.CONFLICT, f"{folder} changed while it was being registered; register it again")
    shutil.rmtree(target, ignore_errors=True)  # a damaged copy
    tmp.rename(target)
    return target


def validate_adapter(name: str, path: str | Path, *, adapters_dir: Path, model_name: str, model_dir: Path, max_bytes: int,
                     limits: LoraLimits = LoraLimits()) -> AdapterRecord:
    """Check everything that can be checked before the engine sees the folder."""
    if not NAME_PATTERN.match(name):
        raise AdapterError(Problem.INVALID, f"bad adapter name {name!r}: use letters, digits, '.', '_', '-' and an optional '@VERSION', e.g. 'team-py@7'")
    root = adapters_dir.resolve()
    folder = Path(path)
    if not folder.is_absolute():
        folder = root / folder
    folder = folder.resolve()  # follows links: the real folder must be inside adapters_dir
    if folder != root and root not in folder.parents:
        raise AdapterError(Problem.FORBIDDEN, f"{path} is outside the adapter directory {root}; copy the adapter there first")
    if not folder.is_dir():
        raise AdapterError(Problem.NOT_FOUND, f"no adapter folder at {folder}")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterError(Problem.INVALID, f"{folder} has no adapter_config.json: is it a PEFT adapter folder?")
    if not (folder / WEIGHTS_FILE).is_file():
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = f" (found {', '.join(pickles)}: pickled weights are refused because loading them runs code)" if pickles else ""
        raise AdapterError(Problem.INVALID, f"{folder} has no {WEIGHTS_FILE}{hint}")
    links = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_symlink())
    if links:  # a link could point anywhere, and change after the sha256 was taken
        raise AdapterError(Problem.INVALID, f"{folder} holds links ({', '.join(links[:5])}); copy the files in instead")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size > max_bytes:
        raise AdapterError(Problem.TOO_LARGE, f"adapter folder is {size / 2**20:.0f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB (setting adapter_max_mb)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(Problem.INVALID, f"adapter_config.json is not valid JSON: {exc}") from None
    if config.get("peft_type") != "LORA":
        raise AdapterError(Problem.INVALID, f"only LoRA adapters are served; this one has peft_type={config.get('peft_type')!r}")
    if config.get("modules_to_save"):
        raise AdapterError(Problem.INVALID, "adapters with modules_to_save are refused (vLLM cannot serve them); keep adapters LoRA-only")
    _check_config_keys(config)
    base = str(config.get("base_model_name_or_path") or "")
    if not _same_model(base, model_name, model_dir):
        raise AdapterError(Problem.INVALID, f"adapter was trained on {base!r}, but this server serves {model_name!r}")
    rank, targets = _check_lora_shape(config, limits)
    meta_file = folder / "codeloop.json"
    try:
        metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except (OSError, ValueError) as exc:
        raise AdapterError(Problem.INVALID, f"codeloop.json is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("fim_template", ""), (str, type(None))):
        raise AdapterError(Problem.INVALID, "codeloop.json must be an object whose fim_template, if any, is a template name")
    return AdapterRecord(
        name=name,
        path=str(folder),
        sha256=hash_folder(folder),
        size_bytes=size,
        base_model=base,
        rank=rank,
        target_modules=targets,
        fim_template=metadata.get("fim_template"),
        metadata=metadata,
    )


# adapter_config.json keys that may hold a value; every other key must be empty (null, false,
# {}, []), whatever PEFT version wrote it: e.g. layer_replication would rewrite the shared base
# model's layers, trainable_token_indices its embeddings.
_CONFIG_KEYS_WITH_VALUES = frozenset({
    "peft_type", "task_type", "peft_version", "base_model_name_or_path", "revision", "r", "lora_alpha",
    "lora_dropout", "target_modules", "exclude_modules", "rank_pattern", "alpha_pattern", "layers_to_transform",
    "layers_pattern", "bias", "fan_in_fan_out", "inference_mode", "init_lora_weights", "use_rslora", "auto_mapping",
    "megatron_core", "qalora_group_size", "ensure_weight_tying", "loftq_config",
})


def _check_config_keys(config: dict) -> None:
    refused = sorted(k for k, v in config.items() if k not in _CONFIG_KEYS_WITH_VALUES and v not in (None, False, {}, [], ""))
    if refused:
        raise AdapterError(Problem.INVALID, f"adapter_config.json sets {', '.join(refused)}: refused (only plain LoRA weights are "
                                            "served; these would change the shared base model or are not supported by every engine)")
    if config.get("bias", "none") != "none":
        raise AdapterError(Problem.INVALID, "adapter_config.json: bias must be 'none' (trained biases would change the shared base model)")


def _check_lora_shape(config: dict, limits: LoraLimits) -> tuple[int, list[str]]:
    """The adapter's rank and target modules, checked against what the engine can serve."""
    try:
        ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    except (TypeError, ValueError, AttributeError):
        raise AdapterError(Problem.INVALID, "adapter_config.json: 'r' and 'rank_pattern' must be integers") from None
    rank = max(ranks)
    if rank < 1:
        raise AdapterError(Problem.INVALID, "adapter_config.json has no LoRA rank 'r' >= 1")
    if limits.max_rank is not None and rank > limits.max_rank:
        raise AdapterError(Problem.INVALID, f"adapter rank {rank} is over this engine's limit of {limits.max_rank} (setting max_lora_rank; "
                                            "vLLM servers need --max-lora-rank at least as high); train with a smaller r")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        # PEFT's "all-linear" or a regular expression: the layers are only known once applied.
        if limits.target_modules is not None and targets != "all-linear":
            raise AdapterError(Problem.INVALID, f"target_modules is the pattern {targets!r}; list the module names so they can be "
                                                f"checked against what this engine supports: {sorted(limits.target_modules)}")
        return rank, [targets]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise AdapterError(Problem.INVALID, "adapter_config.json: target_modules must be a non-empty list of module names")
    if limits.target_modules is not None:
        unsupported = sorted({t.rsplit(".", 1)[-1] for t in targets} - limits.target_modules)
        if unsupported:
            raise AdapterError(Problem.INVALID, f"this engine cannot apply LoRA to {unsupported}; it supports {sorted(limits.target_modules)}")
    return rank, sorted(targets)


def _same_model(base: str, model_name: str, model_dir: Path) -> bool:
    if not base:
        return False
    # Trainers record a hub name or a local path; both name the served model by its folder.
    return base == model_name or Path(base).name == model_dir.name or Path(base).resolve() == model_dir.resolve()


class AdapterRegistry:
    """The adapters the engine has loaded, the live pointer, and their saved state."""

    def __init__(self, engine: Engine, *, adapters_dir: Path, state_file: Path, max_bytes: int):
        self.engine = engine
        self.adapters_dir = adapters_dir
        self.state_file = state_file
        self.max_bytes = max_bytes
        self.records: dict[str, AdapterRecord] = {}
        self.live: str | None = None
        # Names unloaded, with the sha256 of their weights: a name is an immutable version, so
        # it never comes back with other weights (metrics and A/B reports are kept by name).
        self.retired: dict[str, str] = {}
        self._lock = asyncio.Lock()  # one load/promote/unload at a time

    async def restore(self) -> list[str]:
        """Reload what was registered before a restart; return problems (adapters skipped)."""
        if not self.state_file.is_file():
            return []
        state = json.loads(self.state_file.read_text())
        self.retired = dict(state.get("retired", {}))
        problems = []
        for raw in state.get("adapters", []):
            record = AdapterRecord(**raw)
            try:
                store = Path(record.store) if record.store else None
                if store is None or not store.is_dir() or hash_folder(store) != record.sha256:
                    # No copy yet (registered by an older codeloop) or a damaged one: from the
                    # registered folder, if it still holds the same bytes.
                    if hash_folder(Path(record.path)) != record.sha256:
                        raise AdapterError(Problem.CONFLICT, "its files changed since it was registered (sha256 differs) "
                                                             "and the server's copy is missing")
                    store = store_copy(self.adapters_dir.resolve(), Path(record.path), record.sha256)
                record.store = str(store)
                await self.engine.load_adapter(record.name, store)
            except (OSError, AdapterError, EngineError) as exc:
                problems.append(f"adapter {record.name} not restored: {exc}")
                self.retired.setdefault(record.name, record.sha256)  # the name stays its weights'
                continue
            self.records[record.name] = record
        live = state.get("live")
        self.live = live if live in self.records else None
        return problems

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"live": self.live, "adapters": [asdict(r) for r in self.records.values()],
                                   "retired": self.retired}, indent=2))
        tmp.replace(self.state_file)

    def resolve(self, requested: str | None) -> str | None:
        """The adapter a request runs with: the named one, else the live one (None = base model)."""
        if requested is None:
            return self.live
        if requested in (BASE, self.engine.model_name):
            return None
        if requested not in self.records:
            known = ", ".join([BASE, *sorted(self.records)])
            raise AdapterError(Problem.NOT_FOUND, f"unknown adapter {requested!r}; loaded: {known}")
        return requested

    async def register(self, name: str, path: str) -> AdapterRecord:
        async with self._lock:
            if name in self.records:
                raise AdapterError(Problem.CONFLICT, f"adapter {name!r} already exists; names are immutable versions, register a new one such as '{_next_version(name)}'")
            record = validate_adapter(
                name, path, adapters_dir=self.adapters_dir, model_name=self.engine.model_name,
                model_dir=self.engine.model_dir, max_bytes=self.max_bytes, limits=getattr(self.engine, "lora_limits", LoraLimits()),
            )
            if self.retired.get(name, record.sha256) != record.sha256:
                raise AdapterError(Problem.CONFLICT, f"adapter name {name!r} was used before for other weights (sha256 "
                                                     f"{self.retired[name][:12]}…); names are immutable versions: register these "
                                                     f"as '{_next_version(name)}'")
            record.store = str(store_copy(self.adapters_dir.resolve(), Path(record.path), record.sha256))
            try:
                await self.engine.load_adapter(name, Path(record.store))
            except EngineUnavailable as exc:  # nothing wrong with the adapter: try again later
                self._drop_unused_copy(record.store)
                raise AdapterError(Problem.UNAVAILABLE, str(exc)) from None
            except EngineError as exc:
                self._drop_unused_copy(record.store)
                raise AdapterError(Problem.INVALID, str(exc)) from None
            self.records[name] = record
            self._save()
            return record

    async def promote(self, name: str) -> None:
        async with self._lock:
            if name not in self.records and name != BASE:
                raise AdapterError(Problem.NOT_FOUND, f"unknown adapter {name!r}")
            self.live = None if name == BASE else name
            if self.live:
                # The trainer adds its held-out figures and gate to codeloop.json after loading
                # the adapter to evaluate it: show what the file says now (the FIM template
                # stays as registered: requests already use it).
                meta_file = Path(self.records[name].path) / "codeloop.json"
                try:
                    metadata = json.loads(meta_file.read_text())
                except (OSError, ValueError):
                    metadata = None
                if isinstance(metadata, dict):  # else unreadable now: keep what was read at registration
                    self.records[name].metadata = metadata
            self._save()

    async def unload(self, name: str, *, in_use: set[str] = frozenset()) -> None:
        async with self._lock:
            if name not in self.records:
                raise AdapterError(Problem.NOT_FOUND, f"unknown adapter {name!r}")
            if name == self.live:
                raise AdapterError(Problem.CONFLICT, f"adapter {name!r} is live; promote another adapter (or 'base') first")
            if name in in_use:
                raise AdapterError(Problem.CONFLICT, f"adapter {name!r} is an arm of a running experiment; stop it first")
            # Removed from the registry first: no new request can pick it, and requests that
            # already did are ahead of the unload in the engine's queue.
            record = self.records.pop(name)
            try:
                await self.engine.unload_adapter(name)
            except EngineError:
                self.records[name] = record
                raise
            self.retired[name] = record.sha256
            self._save()
            self._drop_unused_copy(record.store)

    def _drop_unused_copy(self, store: str) -> None:
        """Remove the server's copy of an adapter once no loaded name serves those bytes."""
        if store and all(r.store != store for r in self.records.values()):
            shutil.rmtree(store, ignore_errors=True)


def _next_version(name: str) -> str:
    base, _, version = name.partition("@")
    return f"{base}@{int(version) + 1 if version.isdigit() else 2}"
