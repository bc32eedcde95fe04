"""The Q8_0 GGUF that engine llama-cpp serves for the default model (gguf_quant = "q8_0", the
default), written once next to the converted folder, here by a real `codeloop model prepare`
with default settings on a linked copy of the test model folder."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from codeloop.models import (CHECK_PROMPT, DEFAULT_MODEL_NAME, MAX_MEAN_KL_VS_LLAMA_CPP, MIN_TOP1_AGREEMENT_VS_LLAMA_CPP,
                             ModelError, gguf_path, q8_0_path, served_gguf)
from tests.conftest import linked_model_dir

pytest.importorskip("llama_cpp")  # prepare writes the file where the engine (auto) is llama-cpp

FIB = "def fibonacci(n):\n"


@pytest.fixture(scope="module")
def prepared(model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("q8-data")
    linked = linked_model_dir(model_dir, data / "models", DEFAULT_MODEL_NAME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODELOOP_")}  # every setting at its default
    env |= {"CODELOOP_DATA_DIR": str(data), "CODELOOP_CONFIG": os.devnull}
    done = subprocess.run([sys.executable, "-m", "codeloop.cli", "model", "prepare"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return linked, done


def test_model_prepare_writes_it_once_next_to_the_folder(prepared):
    linked, done = prepared
    q8 = q8_0_path(linked)
    assert q8 == linked.parent / f"{DEFAULT_MODEL_NAME}.Q8_0.gguf" and q8.is_file()
    engine_line = next(line for line in done.stdout.splitlines() if line.startswith("engine: "))
    assert engine_line.startswith("engine: llama-cpp (auto: ") and engine_line.endswith(f"; serves {q8}")
    assert f"writing {q8.name}" in done.stderr  # the progress bar
    assert sorted(p.name for p in linked.parent.iterdir()) == sorted([linked.name, q8.name])  # no .partial left
    assert q8.stat().st_mode & 0o777 == 0o600  # as everything codeloop writes (umask 077): the user's alone
    written = q8.stat().st_mtime_ns
    assert served_gguf(linked, "q8_0") == q8 and q8.stat().st_mtime_ns == written  # reused, not rewritten
    assert served_gguf(linked, "as-shipped") == gguf_path()


def test_the_file_holds_the_shipped_weights_in_q8_0(prepared):
    """Same metadata (but the file type), same tensors; the Q4_1 matrices now Q8_0, each weight
    within 0.6 of its block's Q8_0 step of the shipped value (half a step of rounding, and
    the step itself is stored as float16), everything else byte for byte."""
    import gguf

    shipped, ours = gguf.GGUFReader(str(gguf_path())), gguf.GGUFReader(str(q8_0_path(prepared[0])))
    fields = {f.name: f.contents() for f in shipped.fields.values() if not f.name.startswith("GGUF.")}
    assert {f.name: f.contents() for f in ours.fields.values() if not f.name.startswith("GGUF.")} == \
        fields | {"general.file_type": 7}
    tensors = {t.name: t for t in ours.tensors}
    assert sorted(tensors) == sorted(t.name for t in shipped.tensors)
    kinds = set()
    for before in shipped.tensors:
        after = tensors[before.name]
        assert after.shape.tolist() == before.shape.tolist()
        kinds.add((before.tensor_type.name, after.tensor_type.name))
        if before.tensor_type != gguf.GGMLQuantizationType.Q4_1:
            assert after.tensor_type == before.tensor_type and np.array_equal(after.data, before.data), before.name
            continue
        old = gguf.quants.dequantize(before.data, before.tensor_type).reshape(-1, 32)
        new = gguf.quants.dequantize(after.data, after.tensor_type).reshape(-1, 32)
        step = np.abs(old).max(-1) / 127
        assert (np.abs(new - old).max(-1) <= 0.6 * step).all(), before.name
    assert kinds == {("Q4_1", "Q8_0"), ("Q8_0", "Q8_0"), ("F32", "F32")}


def test_llama_cpp_answers_from_it_as_from_the_shipped_file(prepared, model_dir, smol_tokenizer):
    """Greedy first tokens of a short prompt: the same 8 as from the shipped file (measured:
    the same 16; where Q4_1's two best tokens are within ~0.3 logits of each other, as after
    other prompts, the two files may part, so one clear prompt is asserted). And, as the
    conversion check asks of the shipped file, its next-token distributions on CHECK_PROMPT
    against the exact model (the converted folder in fp32): mean KL and top-1 agreement
    within the same bounds (measured: 0.0034 nats and 100 %; shipped file 0.0018, 100 %)."""
    import torch
    from transformers import AutoModelForCausalLM

    from server.engines.llama_cpp_model import LlamaCppModel

    def greedy(gguf, ids, n):
        model = LlamaCppModel(gguf, n_ctx=256, n_threads=1)
        try:
            return _greedy(model, ids, n)
        finally:
            model.close()

    q8 = q8_0_path(prepared[0])
    fib = smol_tokenizer(FIB, add_special_tokens=False).input_ids
    assert greedy(q8, fib, 8) == greedy(gguf_path(), fib, 8)

    ids = smol_tokenizer(CHECK_PROMPT, add_special_tokens=False).input_ids
    model = LlamaCppModel(q8, n_ctx=256, n_threads=1)
    try:
        ours = np.array([model.decode([t], i, logits=True) for i, t in enumerate(ids)], dtype=np.float64)
    finally:
        model.close()
    with torch.no_grad():
        exact = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(torch.tensor([ids])).logits[0].double().numpy()
    mean_kl, top1 = _kl_and_top1(exact, ours)
    assert mean_kl <= MAX_MEAN_KL_VS_LLAMA_CPP and top1 >= MIN_TOP1_AGREEMENT_VS_LLAMA_CPP, (mean_kl, top1)


def test_decoding_from_the_amx_layout_answers_as_the_plain_one(prepared, model_dir, smol_tokenizer):
    """What the server runs on a CPU with AMX (amx_decode, the default): prompts read in
    batches from the Q8_0 copy, tokens generated one at a time from the shipped Q4_1 file in
    llama.cpp's AMX layout. FIB's 8 greedy tokens are those of the plain Q4_1 file; and with
    CHECK_PROMPT's first 8 tokens read in one batch, then the rest one by one (so the sequence
    is copied from one copy of the weights to the other), the next-token distributions stay
    within the conversion check's bounds against the exact model (measured over 900 positions
    of this repository's code: mean KL 0.0039 nats, top-1 97.3 %; plain Q8_0: 0.0053, 96.0 %)."""
    import torch
    from transformers import AutoModelForCausalLM

    from server.engines.llama_cpp_amx import amx_buffer_type, step_weights
    from server.engines.llama_cpp_model import LlamaCppModel

    if amx_buffer_type() is None:
        pytest.skip("this CPU (or this build of llama.cpp) has no AMX weight layout")
    q8 = q8_0_path(prepared[0])
    step, said = step_weights(prepared[0], q8)
    assert step == gguf_path() and "AMX layout" in said, said

    def logits_of(model, ids, batch):
        first = model.decode(ids[:batch], 0, logits=True)
        return [first] + [model.decode([t], batch + i, logits=True) for i, t in enumerate(ids[batch:])]

    fib = smol_tokenizer(FIB, add_special_tokens=False).input_ids
    answers = []
    for served, step_gguf in ((gguf_path(), None), (q8, step)):
        model = LlamaCppModel(served, n_ctx=256, n_threads=1, step_gguf=step_gguf)
        try:
            assert model.steps_on_amx == (step_gguf is not None)
            answers.append(_greedy(model, fib, 8))
            if step_gguf is not None:
                ids = smol_tokenizer(CHECK_PROMPT, add_special_tokens=False).input_ids
                model.truncate(0)
                ours = np.array(logits_of(model, ids, 8), dtype=np.float64)
        finally:
            model.close()
    assert answers[0] == answers[1]
    with torch.no_grad():
        exact = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(torch.tensor([ids])).logits[0].double().numpy()
    exact = exact[7:]  # the batch read gives the logits of its last token only
    mean_kl, top1 = _kl_and_top1(exact, ours)
    assert mean_kl <= MAX_MEAN_KL_VS_LLAMA_CPP and top1 >= MIN_TOP1_AGREEMENT_VS_LLAMA_CPP, (mean_kl, top1)


def test_what_cannot_go_into_the_amx_layout_is_named(tmp_path):
    from codeloop.gguf_requant import write_gguf_as
    from server.engines.llama_cpp_amx import unsuitable

    assert unsuitable(gguf_path()) is None
    f16 = write_gguf_as(gguf_path(), tmp_path / "model-F16.gguf", "F16")
    assert unsuitable(f16) == "blk.0.ffn_down.weight is F16 (checked: Q4_1, Q8_0)"


def test_a_gguf_the_user_names_is_served_as_it_is(tmp_path):
    shipped = gguf_path()
    assert served_gguf(shipped, "q8_0") == shipped
    folder = tmp_path / "their-model"  # their own folder (no conversion marker) with one GGUF in it
    folder.mkdir()
    (folder / "model.Q4_1.gguf").symlink_to(shipped)
    assert served_gguf(folder, "q8_0") == folder / "model.Q4_1.gguf"
    assert not q8_0_path(folder).exists()


def test_a_failed_write_leaves_nothing_and_says_what_to_do(model_dir, tmp_path):
    linked = linked_model_dir(model_dir, tmp_path / "models")
    q8_0_path(linked).mkdir()  # the name is taken: the final rename fails
    with pytest.raises(ModelError, match='set gguf_quant = "as-shipped" to serve SmolLM2-135M-Instruct.Q4_1.gguf'):
        served_gguf(linked, "q8_0")
    assert sorted(p.name for p in linked.parent.iterdir()) == sorted([linked.name, q8_0_path(linked).name])


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """`n` greedy tokens after `ids` (read in one batch) from a LlamaCppModel."""
    logits, out = model.decode(ids, 0, logits=True), []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = model.decode([out[-1]], len(ids) + len(out) - 1, logits=True)
    return out


def _kl_and_top1(exact: np.ndarray, ours: np.ndarray) -> tuple[float, float]:
    """Mean KL(exact || ours) of the next-token distributions, and top-1 agreement."""
    log_p, log_q = _log_softmax(exact), _log_softmax(ours)
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean()), float((exact.argmax(-1) == ours.argmax(-1)).mean())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
