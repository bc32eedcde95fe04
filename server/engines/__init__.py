"""Engines: one protocol (server.engines.base.Engine), several implementations."""
import dataclasses
import logging

from server.engines.base import Completion, Engine, EngineBusy, EngineError, EngineUnavailable, GenerationParams, LoraLimits
from server.engines.choice import EngineChoice, choose_engine

__all__ = ["Completion", "Engine", "EngineBusy", "EngineChoice", "EngineError", "EngineUnavailable", "GenerationParams",
           "LoraLimits", "choose_engine", "engine_choice", "make_engine"]

log = logging.getLogger("codeloop.server")

# The layers vLLM applies LoRA to in Llama-family models (it packs q/k/v and gate/up itself);
# an adapter on any other layer (embed_tokens, lm_head, norms) is refused by vLLM.
VLLM_LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def make_engine(settings, model_dir, choice: EngineChoice | None = None) -> Engine:
    """The engine named in settings (`engine = "..."`, "auto" resolved by choose_engine unless
    `choice` says already), configured from them; engine_choice(engine) says which and why."""
    choice = choice or choose_engine(settings.engine, model_dir)
    engine = _build(choice.name, settings, model_dir)
    if choice.name == "llama-cpp":
        step = f", generating from {engine.step_gguf.name} in llama.cpp's AMX layout" if engine.step_gguf else ""
        choice = dataclasses.replace(choice, reason=f"{choice.reason}; serving {engine.gguf.name}{step}")
    engine.choice = choice
    log.info("engine %s (%s)", choice.name, choice.reason)
    return engine


def engine_choice(engine: Engine, settings) -> EngineChoice:
    """Which engine answers and why (for /healthz): what make_engine recorded, else (an engine
    built elsewhere) the setting."""
    return getattr(engine, "choice", None) or EngineChoice(settings.engine, "engine given to the app")


def _build(name: str, settings, model_dir) -> Engine:
    if name == "transformers":
        from server.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model_dir, max_queue=settings.max_queue, torch_threads=settings.torch_threads)
    if name == "llama-cpp":
        return _llama_cpp_engine(settings, model_dir)
    from server.engines.vllm_common import ZERO_ADAPTER

    # The all-zero adapter that stands for "no adapter" on vLLM (see vllm_common.py).
    zero_adapter_dir = settings.adapters_dir / f".{ZERO_ADAPTER}"
    if name == "vllm-remote":
        from server.engines.vllm_remote import VllmRemoteEngine

        engine = VllmRemoteEngine(
            model_dir, settings.vllm_urls, served_model=settings.vllm_served_model, api_key=settings.vllm_api_key,
            timeout_s=settings.vllm_timeout_s, retries=settings.vllm_retries, reconcile_s=settings.vllm_reconcile_s,
            adapter_dir=settings.adapters_dir, adapter_root=settings.vllm_adapter_root,
            zero_base_adapter=settings.vllm_zero_base_adapter != "off",
            zero_adapter_dir=zero_adapter_dir)
    elif name == "vllm":
        from server.engines.vllm_engine import VllmEngine

        engine = VllmEngine(
            model_dir, max_loras=settings.max_loras, max_cpu_loras=settings.max_cpu_loras, max_lora_rank=settings.max_lora_rank,
            dtype=settings.vllm_dtype, max_model_len=settings.vllm_max_model_len,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization, zero_base_adapter=settings.vllm_zero_base_adapter,
            zero_adapter_dir=zero_adapter_dir)
    else:
        raise EngineError(f"unknown engine {name!r}")
    # The remote servers must be started with --max-lora-rank >= this setting (README).
    engine.lora_limits = LoraLimits(max_rank=settings.max_lora_rank, target_modules=VLLM_LORA_MODULES)
    return engine


def _llama_cpp_engine(settings, model_dir) -> Engine:
    from codeloop.models import ModelError, served_gguf
    from server.engines.llama_cpp_engine import LlamaCppEngine, load_tokenizer

    try:
        gguf = served_gguf(model_dir, settings.gguf_quant)
    except ModelError as exc:
        raise EngineError(str(exc)) from None
    step_gguf = None
    if settings.amx_decode:
        from server.engines.llama_cpp_amx import step_weights

        step_gguf, said = step_weights(model_dir, gguf)
        log.info("llama-cpp: %s", said)
    # Room for the longest prompt the server builds and the longest answer it allows.
    n_ctx = settings.max_prompt_tokens + settings.max_tokens_limit + 64
    return LlamaCppEngine(model_dir, gguf, load_tokenizer(model_dir, gguf), max_queue=settings.max_queue,
                          threads=settings.torch_threads, n_ctx=n_ctx, step_gguf=step_gguf)
