"""Engines: one protocol (server.engines.base.Engine), several implementations."""
from server.engines.base import Completion, Engine, EngineBusy, EngineError, GenerationParams

__all__ = ["Completion", "Engine", "EngineBusy", "EngineError", "GenerationParams", "make_engine"]


def make_engine(kind: str, model_dir, *, max_queue: int = 64, torch_threads: int = 0) -> Engine:
    """The engine named in settings (`engine = "..."`)."""
    if kind == "transformers":
        from server.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model_dir, max_queue=max_queue, torch_threads=torch_threads)
    raise EngineError(f"unknown engine {kind!r}")
