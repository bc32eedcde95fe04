"""llama.cpp's AMX weight layout, used here to read one token at a time.

Why: on CPUs with AMX (Intel Xeon of the 4th generation on, what these machines have),
llama.cpp can hold a model's matrices in its "AMX" buffer type, repacked for AVX512-VNNI.
Reading one token from that layout takes ~8 ms for the default model here (Q4_1; Q8_0 ~10 ms)
against ~15 ms from the plain Q8_0 layout: decoding is 1.9x as fast (bench/engine_llama_cpp.py). Reading more
than one token at once from it goes through AMX tile instructions, which crash this process
(SIGSEGV at `ldtilecfg` inside llama.cpp; AMX tiles themselves work here, so it is that code),
so a context on these weights is made with n_ubatch = 1: llama.cpp then splits whatever it is
given into one-token pieces and never reaches that path. Prompts are read in batches from a
second copy of the weights in the plain layout (llama_cpp_model.py).

Only the per-layer matrices go into the AMX layout, and only when they are of a type its
one-token kernels take; anything else (norms, the tied embedding that is also read by row)
stays where llama.cpp puts it.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

# The matrices moved to the AMX layout: every layer's attention and feed-forward weights.
PATTERN = rb"blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight"
_NAMES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# GGML types whose one-token AMX kernels were checked here against the plain layout (same
# greedy tokens; mean KL to the exact model as with the plain layout). llama.cpp takes Q4_0
# there too; it is left out until checked.
CHECKED_TYPES = {"Q4_1", "Q8_0"}


class _Override(ctypes.Structure):  # struct llama_model_tensor_buft_override
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def amx_buffer_type() -> int | None:
    """llama.cpp's AMX buffer type (a ggml_backend_buffer_type_t), or None where this CPU or
    this build of llama.cpp has none."""
    from llama_cpp._ggml import libggml

    for name, restype, argtypes in (
        ("ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int]),
        ("ggml_backend_dev_backend_reg", ctypes.c_void_p, [ctypes.c_void_p]),
        ("ggml_backend_reg_get_proc_address", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        ("ggml_backend_buft_name", ctypes.c_char_p, [ctypes.c_void_p]),
    ):
        function = getattr(libggml, name, None)
        if function is None:
            return None
        function.restype, function.argtypes = restype, argtypes
    cpu = libggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not cpu:
        return None
    address = libggml.ggml_backend_reg_get_proc_address(libggml.ggml_backend_dev_backend_reg(cpu),
                                                        b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(cpu)
    i = 0
    while extra and extra[i]:
        if libggml.ggml_backend_buft_name(extra[i]) == b"AMX":
            return extra[i]
        i += 1
    return None


def unsuitable(gguf: Path) -> str | None:
    """Why the matrices of `gguf` cannot go into the AMX layout, or None when they can."""
    import gguf as gguf_lib

    matrices = [t for t in gguf_lib.GGUFReader(str(gguf)).tensors
                if t.name.startswith("blk.") and t.name.rsplit(".", 2)[-2] in _NAMES]
    if not matrices:
        return f"{gguf.name} has none of the layer matrices it knows ({', '.join(_NAMES)})"
    for tensor in matrices:
        kind = tensor.tensor_type.name
        if kind not in CHECKED_TYPES:
            return f"{tensor.name} is {kind} (checked: {', '.join(sorted(CHECKED_TYPES))})"
        columns, rows = int(tensor.shape[0]), int(tensor.shape[1])
        if columns % 32 or rows % 16:
            return f"{tensor.name} is {columns}x{rows} (needs multiples of 32 and 16)"
    return None


def weights_override(buft: int) -> ctypes.Array:
    """The NULL-terminated override list that puts the layer matrices into `buft` (keep a
    reference for as long as llama.cpp loads the model)."""
    overrides = (_Override * 2)()
    overrides[0].pattern, overrides[0].buft = PATTERN, buft
    return overrides


def step_weights(model: Path, served: Path) -> tuple[Path | None, str]:
    """The GGUF to generate from in the AMX layout, for `model` served from `served`, and a
    line that says so or why not: the default model's shipped file (its exact weights; Q4_1
    decodes faster than the Q8_0 copy that reads prompts), else the served file itself."""
    from codeloop.models import MARKER, gguf_for_model

    try:
        buft = amx_buffer_type()
    except (ImportError, OSError) as exc:
        return None, f"no AMX decoding: llama.cpp's buffer types cannot be listed ({exc})"
    if buft is None:
        return None, "no AMX decoding: this CPU or this build of llama.cpp has no AMX weight layout"
    step = gguf_for_model(model) if (Path(model) / MARKER).is_file() else Path(served)
    problem = unsuitable(step)
    if problem is not None:
        return None, f"no AMX decoding: {problem}"
    return step, f"generating from {step.name} in llama.cpp's AMX layout (amx_decode)"
