"""engine = "auto": each case of the choice, what this machine probes as, and a real `codeloop up`
with the default engine setting that reports the engine it picked (and why) in its banner
and in /healthz."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from server.engines import EngineError
from server.engines.choice import Probe, choose_engine, probe
from tests.conftest import linked_model_dir, start_server

NO_GPU = "no CUDA device"
NO_LLAMA = "llama-cpp-python is not installed"


@pytest.fixture
def hf_folder_without_gguf(tmp_path):
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def test_a_named_engine_is_used_as_it_is(model_dir):
    for name in ("transformers", "llama-cpp", "vllm", "vllm-remote"):
        choice = choose_engine(name, model_dir, Probe(vllm=None, llama_cpp=None))
        assert (choice.name, choice.reason) == (name, f"engine = {name!r} in settings")


def test_auto_prefers_vllm_where_cuda_and_vllm_are_present(model_dir):
    choice = choose_engine("auto", model_dir, Probe(vllm=None, llama_cpp=None))
    assert choice.name == "vllm" and "CUDA" in choice.reason


def test_auto_picks_llama_cpp_on_cpu_for_a_model_with_a_gguf(model_dir):
    from codeloop.models import gguf_for_model

    choice = choose_engine("auto", model_dir, Probe(vllm=NO_GPU, llama_cpp=None))
    assert choice.name == "llama-cpp"
    assert choice.reason.startswith(f"auto: {NO_GPU}; llama-cpp-python imports") and gguf_for_model(model_dir).name in choice.reason


def test_auto_falls_back_to_transformers(model_dir, hf_folder_without_gguf):
    missing = choose_engine("auto", model_dir, Probe(vllm="vllm is not installed", llama_cpp=NO_LLAMA))
    assert missing.name == "transformers" and NO_LLAMA in missing.reason and "vllm is not installed" in missing.reason
    no_gguf = choose_engine("auto", hf_folder_without_gguf, Probe(vllm=NO_GPU, llama_cpp=None))
    assert no_gguf.name == "transformers" and "no GGUF file" in no_gguf.reason and "holds none" in no_gguf.reason


def test_auto_serves_a_gguf_file_on_llama_cpp_only():
    from codeloop.models import gguf_path

    gguf = gguf_path()
    # Even with vLLM available: only llama.cpp reads a bare GGUF file here.
    assert choose_engine("auto", gguf, Probe(vllm=None, llama_cpp=None)).name == "llama-cpp"
    with pytest.raises(EngineError, match=r"only engine 'llama-cpp' serves, and llama-cpp-python is not installed \(install it"):
        choose_engine("auto", gguf, Probe(vllm=NO_GPU, llama_cpp=NO_LLAMA))


def test_a_broken_native_build_counts_as_absent(tmp_path, monkeypatch):
    """A module that is there but fails to load (as a llama-cpp-python whose shared library
    is missing does, with OSError) is reported, not raised."""
    from server.engines.choice import _import_problem

    (tmp_path / "broken_native.py").write_text("raise OSError('libllama.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_problem("broken_native", "broken-native") == \
        "broken-native does not import (OSError: libllama.so: cannot open shared object file)"
    assert _import_problem("no_such_module_here", "nothing") == "nothing is not installed"


def test_this_machine_probes_as_cpu_with_llama_cpp():
    pytest.importorskip("llama_cpp")
    import torch

    if torch.cuda.device_count():
        pytest.skip("a CUDA machine: auto may pick vLLM here")
    found = probe()
    assert found.llama_cpp is None and found.vllm in (NO_GPU, "vllm is not installed")


def test_settings_take_auto_as_the_default_and_with_a_gguf_model(monkeypatch, tmp_path):
    from codeloop.models import gguf_path
    from codeloop.settings import load_settings

    for key in list(os.environ):
        if key.startswith("CODELOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CODELOOP_CONFIG", os.devnull)
    assert load_settings().engine == "auto"
    assert load_settings(model=str(gguf_path())).engine == "auto"


def test_codeloop_up_with_engine_auto_serves_llama_cpp_and_says_why(model_dir, tmp_path):
    """What `make run` starts, on a copy of the model folder: auto picks llama-cpp here, the
    Q8_0 GGUF is written next to the folder on this first start (progress in the log), and
    the banner and /healthz name the engine and the reason."""
    pytest.importorskip("llama_cpp")
    linked = linked_model_dir(model_dir, tmp_path / "models")
    server = start_server(linked, tmp_path / "data", command="up",
                          env={"CODELOOP_ENGINE": "auto", "CODELOOP_TORCH_THREADS": "1"})
    try:
        health = httpx.get(server.url + "/healthz", timeout=30).json()
        assert health["engine"] == "llama-cpp", health
        reason = health["engine_reason"]
        assert reason.startswith("auto: ") and "llama-cpp-python imports" in reason
        from server.engines.llama_cpp_amx import amx_buffer_type

        amx = ", generating from SmolLM2-135M-Instruct.Q4_1.gguf in llama.cpp's AMX layout" if amx_buffer_type() else ""
        assert reason.endswith(f"serving {linked.name}.Q8_0.gguf{amx}"), reason
        assert (linked.parent / f"{linked.name}.Q8_0.gguf").is_file()
        log = server.log()
        # The banner, printed before the engine is built (so without the file it then serves).
        assert f"engine:     llama-cpp ({reason.rsplit('; serving ', 1)[0]})" in log
        assert f"writing {linked.name}.Q8_0.gguf" in log and "272/272" in log  # the progress bar
        # The prompt template (the default model does not see the suffix) and an editor set-up
        # with this machine's paths, in the banner and /healthz.
        assert "prompt:     prefix-only (the model has no fill-in-the-middle tokens" in log
        assert health["prompt_template"] == "prefix-only" and health["uses_suffix"] is False
        assert "does not see the code after the cursor" in health["notes"][0]
        assert f'cmd = {{ "{Path(sys.executable).parent / "codeloop"}", "lsp" }}' in log
        assert f'init_options = {{ serverUrl = "{server.url}" }}' in log
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "def fibonacci(n):\n", "max_tokens": 8,
                                                             "postprocess": False}, timeout=120)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8, r.text
    finally:
        server.stop()
