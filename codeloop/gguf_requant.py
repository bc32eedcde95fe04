"""A GGUF file rewritten with its matrices in another format (Q8_0, F16 or F32).

Why: the default model ships as Q4_1, and on these CPUs llama.cpp reads prompts from Q4_1
at half transformers' speed, from Q8_0 about as fast as transformers, and decodes from
either ~2x as fast as transformers (bench/engine_llama_cpp.py, README "llama.cpp engine").
The engine therefore serves a Q8_0 copy of the default model (codeloop.models.served_gguf).

Written with the `gguf` package (already a dependency; llama.cpp's own quantizer would need
llama-cpp-python here): each matrix is dequantized and quantized again. The result holds
what the shipped file holds: Q4_1 values (a scale and a minimum per 32 weights, 4 bits each)
fit 8-bit blocks of 32 with rounding errors of a fraction of a Q4_1 step.
"""
from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

import numpy as np

# general.file_type values (llama.cpp's LLAMA_FTYPE_*) of the formats written here.
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7}


def write_gguf_as(source: Path, target: Path, fmt: str, *, progress: bool = False) -> Path:
    """Write a copy of the GGUF `source` with its matrices in `fmt` to `target`, atomically
    (a half-written file never carries the name). `progress`: a bar on stderr."""
    import gguf
    from tqdm import tqdm

    # The writer logs each file it writes at INFO (a temporary name here): the bars say enough.
    logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)
    if fmt not in FILE_TYPES:
        raise ValueError(f"cannot write GGUF format {fmt!r}; choose one of {sorted(FILE_TYPES)}")
    qtype = gguf.GGMLQuantizationType[fmt]
    target = Path(target)
    reader = gguf.GGUFReader(str(source))
    # A name of its own (two servers starting at once each write theirs; the last rename wins,
    # and both files are whole), created by the writer with the umask's mode, as any file.
    partial = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        writer = gguf.GGUFWriter(str(partial), str(reader.get_field("general.architecture").contents()))
        for field in reader.fields.values():
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue  # written by GGUFWriter itself
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            value = FILE_TYPES[fmt] if field.name == "general.file_type" else field.contents()
            writer.add_key_value(field.name, value, kind, sub_type=sub)
        tensors = tqdm(reader.tensors, desc=f"writing {target.name}: converting", unit="tensor", file=sys.stderr, disable=not progress)
        for tensor in tensors:
            if tensor.tensor_type == qtype:  # already in the format (the default model's embeddings): as it is
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=qtype)
                continue
            data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            if data.ndim == 1 or fmt == "F32":  # norms stay F32, as llama.cpp wants them
                writer.add_tensor(tensor.name, data)
            elif fmt == "F16":
                writer.add_tensor(tensor.name, data.astype(np.float16))
            else:
                writer.add_tensor(tensor.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=progress)  # its own bar, in bytes
        writer.close()
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target

