"""Shared fixtures: the real default model, prepared once and reused across test runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Converted models are kept between runs (conversion takes ~45 s); tests never write elsewhere.
TEST_MODELS_DIR = Path(os.environ.get("CODELOOP_TEST_MODELS_DIR", REPO / ".codeloop-test" / "models"))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real default model (SmolLM2-135M-Instruct) as a safetensors folder."""
    override = os.environ.get("CODELOOP_TEST_MODEL_DIR")
    if override:
        return Path(override)
    from codeloop.models import prepare_default_model

    return prepare_default_model(TEST_MODELS_DIR)


@pytest.fixture(scope="session")
def smol_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# --- the real server, as a separate process ------------------------------------------------
import asyncio  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import httpx  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    data_dir: Path
    log_path: Path

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(model_dir: Path, data_dir: Path, *, env: dict | None = None, timeout: float = 180, port: int | None = None,
                 python: str = sys.executable, command: str = "serve") -> ServerProcess:
    """`codeloop serve` on a free port (or `port`, to restart one); returns once /healthz answers.
    `python`: the interpreter (another virtual environment, e.g. the one with vLLM); `command`:
    "up" for what `make run` starts (its banner goes to the log too)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "codeloop.toml").touch()  # CODELOOP_CONFIG must name a file that exists (a test may fill it)
    log_path = data_dir / "server.log"
    full_env = {
        **os.environ,
        "CODELOOP_DATA_DIR": str(data_dir),
        "CODELOOP_MODEL": str(model_dir),
        "CODELOOP_PORT": str(port),
        "CODELOOP_CONFIG": str(data_dir / "codeloop.toml"),
        "CODELOOP_LOG_LEVEL": "warning",
        # The default engine is "auto", which picks llama-cpp wherever llama-cpp-python is
        # installed (as `make test` does): tests name the engine they test, transformers
        # unless `env` says otherwise.
        "CODELOOP_ENGINE": "transformers",
        **(env or {}),
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([python, "-m", "codeloop.cli", command], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, data_dir, log_path)
    wait_healthy("server", proc, server.url + "/healthz", server.log, timeout, lambda: server.stop(signal.SIGKILL))
    return server


def linked_model_dir(model_dir: Path, parent: Path, name: str | None = None) -> Path:
    """A copy of the model folder made of links to its files, in `parent` (named `name`, else
    as the folder): what is written next to the folder (the Q8_0 GGUF) goes to `parent`, and
    the 500 MB are not copied."""
    linked = parent / (name or model_dir.name)
    linked.mkdir(parents=True)
    for item in model_dir.iterdir():
        (linked / item.name).symlink_to(item.resolve())
    return linked


def wait_healthy(what: str, proc: subprocess.Popen, health_url: str, log, timeout: float, kill) -> None:
    """Until `health_url` answers 200; a clear error with the log's end if the process dies or
    never gets there (then `kill()` it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log()[-4000:]}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    kill()
    raise RuntimeError(f"{what} not healthy after {timeout}s:\n{log()[-4000:]}")


def metric(url: str, name: str, **labels) -> float:
    """A Prometheus metric from url/metrics, summed over the series with these labels."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """One real server on the real default model, shared by the whole test session."""
    proc = start_server(model_dir, tmp_path_factory.mktemp("server"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def make_adapter(model_dir, tmp_path_factory):
    """Build a real LoRA adapter for the default model with random weights (seeded).

    `scale` shrinks lora_B so the adapter changes the model's answers without wrecking them.
    """
    cache = tmp_path_factory.mktemp("adapters")
    made: dict[tuple, Path] = {}

    def make(seed: int, scale: float = 0.3, rank: int = 4, targets=("q_proj", "v_proj")) -> Path:
        key = (seed, scale, rank, tuple(targets))
        if key not in made:
            import torch
            from peft import LoraConfig, get_peft_model
            from transformers import AutoModelForCausalLM

            torch.manual_seed(seed)
            base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
            peft_model = get_peft_model(base, LoraConfig(r=rank, target_modules=list(targets), init_lora_weights=False))
            with torch.no_grad():
                for name, weight in peft_model.named_parameters():
                    if "lora_B" in name:
                        weight.mul_(scale)
            out = cache / f"lora-{seed}-{rank}-{scale}"
            peft_model.save_pretrained(out)
            made[key] = out
        return made[key]

    return make


def install_adapter(source: Path, adapters_dir: Path, folder_name: str) -> Path:
    """Copy an adapter folder into a server's adapter directory (where it may load from)."""
    target = adapters_dir / folder_name
    if not target.exists():
        shutil.copytree(source, target)
    return target


async def churn_adapter(client: httpx.AsyncClient, name: str, folder: Path, *, start: float, pause: float) -> list[int]:
    """While other requests run: register `name`, promote it, promote base back, unload it.
    The HTTP status of each step."""
    await asyncio.sleep(start)
    codes = []
    for method, path, body in [("post", "/v1/adapters", {"name": name, "path": str(folder)}),
                               ("post", f"/v1/adapters/{name}/promote", None),
                               ("post", "/v1/adapters/base/promote", None),
                               ("delete", f"/v1/adapters/{name}", None)]:
        r = await (client.post(path, json=body) if method == "post" else client.delete(path))
        codes.append(r.status_code)
        await asyncio.sleep(pause)
    return codes


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def send_json(handler, status: int, answer) -> None:
    """Answer an http.server request with `answer` as JSON (the stand-in servers of the tests)."""
    data = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
