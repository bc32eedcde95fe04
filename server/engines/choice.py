"""Which engine answers, and why: `engine = "auto"` resolved against this machine.

auto (the default): in-process vLLM where there is a CUDA device and vllm imports; else
llama-cpp where llama-cpp-python imports and the model has a GGUF file (it decodes ~2x
faster than transformers on CPU: README "llama.cpp engine"); else transformers, which
serves any Hugging Face folder. The reason is shown in `codeloop up`'s banner, in the
start-up log and in GET /healthz, so nobody has to guess which engine they measured.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from server.engines.base import EngineError


@dataclass(frozen=True)
class EngineChoice:
    name: str  # a concrete engine: transformers, llama-cpp, vllm or vllm-remote
    reason: str


@dataclass(frozen=True)
class Probe:
    """What auto looks at on this machine; each field None where the engine can run, else
    why it cannot."""

    vllm: str | None
    llama_cpp: str | None


def probe() -> Probe:
    # Cheapest first: torch is imported only where vllm is installed at all, and CUDA is
    # counted without initialising it (vLLM must start its workers before CUDA is up).
    if importlib.util.find_spec("vllm") is None:
        vllm = "vllm is not installed"
    else:
        import torch

        vllm = "no CUDA device" if torch.cuda.device_count() == 0 else _import_problem("vllm", "vllm")
    return Probe(vllm=vllm, llama_cpp=_import_problem("llama_cpp", "llama-cpp-python"))


def _import_problem(module: str, package: str) -> str | None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return f"{package} is not installed"
    # A broken native build fails in many ways (OSError for a missing library, RuntimeError,
    # ...); every one of them means "not usable here", and the message says which.
    except Exception as exc:
        return f"{package} does not import ({type(exc).__name__}: {exc})"
    return None


def choose_engine(requested: str, model: Path, found: Probe | None = None) -> EngineChoice:
    """The engine for `model` (a Hugging Face folder or a GGUF file): `requested` itself unless
    it is "auto"; `found`: the machine's Probe (default: probe() now)."""
    if requested != "auto":
        return EngineChoice(requested, f"engine = {requested!r} in settings")
    from codeloop.models import ModelError, gguf_for_model

    found = found or probe()
    model = Path(model)
    if model.suffix == ".gguf":  # only llama.cpp reads a bare GGUF file
        if found.llama_cpp is None:
            return EngineChoice("llama-cpp", "auto: the model is a GGUF file")
        raise EngineError(f"model {model} is a GGUF file, which only engine 'llama-cpp' serves, and {found.llama_cpp} "
                          "(install it: pip install -e '.[cpu]', or give a Hugging Face model folder)")
    if found.vllm is None:
        return EngineChoice("vllm", "auto: a CUDA device is present and vllm imports")
    if found.llama_cpp is not None:
        return EngineChoice("transformers", f"auto: {found.vllm}; {found.llama_cpp} (pip install -e '.[cpu]' for llama-cpp)")
    try:
        gguf = gguf_for_model(model)
    except ModelError as exc:
        return EngineChoice("transformers", f"auto: {found.vllm}; llama-cpp-python imports but the model has no GGUF file for it ({exc})")
    return EngineChoice("llama-cpp", f"auto: {found.vllm}; llama-cpp-python imports and the model has a GGUF file ({gguf.name})")
