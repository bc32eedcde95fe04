"""Threads that follow the free cores: llama.cpp's threads wait for one another, so the engine
with `torch_threads = 0` runs on the cores the machine's other processes leave free."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from server.engines import GenerationParams
from server.engines.free_cores import FreeCores, threads_for

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"


@pytest.mark.parametrize("free, most, expected", [
    (2.0, 2, 2), (1.6, 2, 2), (1.4, 2, 1), (0.9, 2, 1), (0.0, 2, 1),  # never below one thread
    (7.8, 4, 4),  # never above what was asked for
])
def test_threads_for_free_cores(free, most, expected):
    assert threads_for(free, most) == expected


@pytest.fixture
def busy_core():
    """Another process that keeps one core busy (as a training run does)."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_a_busy_process_takes_a_core_and_the_own_work_does_not(busy_core):
    cores = FreeCores()
    assert cores.free() is None  # too short a window to say anything
    time.sleep(1.0)
    free = cores.free()
    assert free is not None and free <= cores.cores - 0.7, free  # the spinning process's core
    # This process's own work is not "another process": it does not lower the figure.
    cores.free()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # a core's worth of work in this process
        pass
    free_while_spinning_here = cores.free()
    assert free_while_spinning_here is not None and free_while_spinning_here <= cores.cores - 0.7
    assert free_while_spinning_here >= free - 0.5 or cores.cores == 1, (free, free_while_spinning_here)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
async def test_the_llama_cpp_engine_gives_up_the_busy_core(model_dir, smol_tokenizer, busy_core):
    pytest.importorskip("llama_cpp")
    from codeloop.models import gguf_for_model
    from server.engines.llama_cpp_engine import LlamaCppEngine

    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: nothing to give up")
    engine = LlamaCppEngine(model_dir, gguf_for_model(model_dir), smol_tokenizer, threads=0, n_ctx=512)
    await engine.start()
    try:
        await asyncio.sleep(1.0)
        result = await engine.complete("def fibonacci(n):\n", GenerationParams(max_tokens=4), None)
        assert result.completion_tokens == 4
        assert engine._model.n_threads <= cores - 1, engine._model.n_threads
    finally:
        await engine.close()
    # A fixed thread count is left as it is.
    fixed = LlamaCppEngine(model_dir, gguf_for_model(model_dir), smol_tokenizer, threads=cores, n_ctx=512)
    await fixed.start()
    try:
        await asyncio.sleep(1.0)
        await fixed.complete("def fibonacci(n):\n", GenerationParams(max_tokens=4), None)
        assert fixed._model.n_threads == cores
    finally:
        await fixed.close()

