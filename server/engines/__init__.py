"""Engines: one protocol (server.engines.base.Engine), several implementations."""
from server.engines.base import Completion, Engine, EngineBusy, EngineError, EngineUnavailable, GenerationParams, LoraLimits

__all__ = ["Completion", "Engine", "EngineBusy", "EngineError", "EngineUnavailable", "GenerationParams", "LoraLimits", "make_engine"]

# The layers vLLM applies LoRA to in Llama-family models (it packs q/k/v and gate/up itself);
# an adapter on any other layer (embed_tokens, lm_head, norms) is refused by vLLM.
VLLM_LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def make_engine(settings, model_dir) -> Engine:
    """The engine named in settings (`engine = "..."`), configured from them."""
    if settings.engine == "transformers":
        from server.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model_dir, max_queue=settings.max_queue, torch_threads=settings.torch_threads)
    if settings.engine == "llama-cpp":
        return _llama_cpp_engine(settings, model_dir)
    from server.engines.vllm_common import ZERO_ADAPTER

    # The all-zero adapter that stands for "no adapter" on vLLM (see vllm_common.py).
    zero_adapter_dir = settings.adapters_dir / f".{ZERO_ADAPTER}"
    if settings.engine == "vllm-remote":
        from server.engines.vllm_remote import VllmRemoteEngine

        engine = VllmRemoteEngine(
            model_dir, settings.vllm_urls, served_model=settings.vllm_served_model, api_key=settings.vllm_api_key,
            timeout_s=settings.vllm_timeout_s, retries=settings.vllm_retries, reconcile_s=settings.vllm_reconcile_s,
            adapter_dir=settings.adapters_dir, adapter_root=settings.vllm_adapter_root,
            zero_base_adapter=settings.vllm_zero_base_adapter != "off",
            zero_adapter_dir=zero_adapter_dir)
    elif settings.engine == "vllm":
        from server.engines.vllm_engine import VllmEngine

        engine = VllmEngine(
            model_dir, max_loras=settings.max_loras, max_cpu_loras=settings.max_cpu_loras, max_lora_rank=settings.max_lora_rank,
            dtype=settings.vllm_dtype, max_model_len=settings.vllm_max_model_len,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization, zero_base_adapter=settings.vllm_zero_base_adapter,
            zero_adapter_dir=zero_adapter_dir)
    else:
        raise EngineError(f"unknown engine {settings.engine!r}")
    # The remote servers must be started with --max-lora-rank >= this setting (README).
    engine.lora_limits = LoraLimits(max_rank=settings.max_lora_rank, target_modules=VLLM_LORA_MODULES)
    return engine


def _llama_cpp_engine(settings, model_dir) -> Engine:
    from codeloop.models import ModelError, gguf_for_model
    from server.engines.llama_cpp_engine import LlamaCppEngine, load_tokenizer

    try:
        gguf = gguf_for_model(model_dir)
    except ModelError as exc:
        raise EngineError(str(exc)) from None
    # Room for the longest prompt the server builds and the longest answer it allows.
    n_ctx = settings.max_prompt_tokens + settings.max_tokens_limit + 64
    return LlamaCppEngine(model_dir, gguf, load_tokenizer(model_dir, gguf), max_queue=settings.max_queue,
                          threads=settings.torch_threads, n_ctx=n_ctx)
