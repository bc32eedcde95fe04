"""Schemathesis over the server's own OpenAPI document, against a real `codeloop serve` on the
real default model: every route, first with auth off, then with auth on (an admin token; the
server turns auth on when the first token appears, so one server serves both runs). No 5xx, and
every status code, content type, header and body is one the document declares.

Generations are kept short (max_tokens_limit 8, default 4) so that the model answers fast; a
larger max_tokens is then refused with a 422, which the document declares too. The mutating
routes (adapters, experiments, DELETE /v1/users) run against a throwaway data_dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.slow

FAST_MODEL = {"CODELOOP_MAX_TOKENS_LIMIT": "8", "CODELOOP_DEFAULT_MAX_TOKENS": "4"}
# Per operation and phase; with the coverage phase's own cases one run is ~700 requests.
MAX_EXAMPLES = 8
SEED = 20261129
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance"]


def create_token(data_dir: Path, user: str, admin: bool = False) -> str:
    """`codeloop token create`: the new token alone on stdout."""
    env = {**os.environ, "CODELOOP_DATA_DIR": str(data_dir), "CODELOOP_CONFIG": os.devnull}
    args = [sys.executable, "-m", "codeloop.cli", "token", "create", "--user", user, *(["--admin"] if admin else [])]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token and "\n" not in token, done.stdout
    return token


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    proc = start_server(model_dir, tmp_path_factory.mktemp("openapi-fuzz"), env=FAST_MODEL)
    yield proc
    proc.stop()


@dataclass
class Tokens:
    admin: dict  # the Authorization header
    user: dict


@pytest.fixture(scope="module")
def tokens(server) -> Tokens:
    """Auth on, from here on: an admin and a user token in the server's data_dir."""
    made = Tokens({"Authorization": f"Bearer {create_token(server.data_dir, 'fuzz-admin', admin=True)}"},
                  {"Authorization": f"Bearer {create_token(server.data_dir, 'fuzz-user')}"})
    deadline = time.monotonic() + 60
    while httpx.get(server.url + "/v1/adapters", timeout=30).status_code != 401:
        assert time.monotonic() < deadline, "the server did not turn auth on after `codeloop token create`"
        time.sleep(0.5)
    return made


def run_schemathesis(server: ServerProcess, headers: dict, workdir: Path, phases: str) -> tuple[dict, str]:
    """`st run` (schemathesis' own runner) against the live server's document; its JSON report
    and its output."""
    report = workdir / "schemathesis.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json",
           "--checks", ",".join(CHECKS), "--phases", phases,
           "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
           "--generation-database", "none", "--request-timeout", "120", "--continue-on-failure",
           "--no-color", "--output-sanitize", "false", "--report", "json", "--report-json-path", str(report)]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    # cwd: its report folder and any schemathesis.toml lookup stay out of the repository.
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1200)
    output = done.stdout + done.stderr
    assert report.is_file(), output[-6000:]
    return json.loads(report.read_text()), output


def check_report(report: dict, output: str, server: ServerProcess) -> None:
    ops = report["operations"]
    assert ops["total"] >= 17 and ops["tested"] == ops["total"] and not ops["errored"], ops
    # No 5xx, and every status, content type, header and body as documented.
    assert report["exit_code"] == 0 and not report["failures"] and not report["errors"], output[-12000:]
    assert not report["warnings"]["unresolvable_reference"], report["warnings"]
    # Not all refused: the documented examples reach the model and come back 200.
    accepted = report["valid_rates"]["POST /v1/completions"]["examples"]["accepted"]
    assert accepted >= 1, report["valid_rates"]["POST /v1/completions"]
    assert "Traceback" not in server.log(), server.log()[-6000:]


# Runs before any test that asks for `tokens` (file order): auth is still off here.
def test_with_auth_off_every_route_answers_as_its_schema_says(server, tmp_path):
    assert not (server.data_dir / "auth_tokens.json").exists(), "run this file in order: auth is already on"
    check_report(*run_schemathesis(server, {}, tmp_path, "examples,coverage,fuzzing"), server)


def test_with_auth_on_every_route_answers_as_its_schema_says(server, tokens, tmp_path):
    # The coverage phase's boundary values (most of the run's time) are the same with auth on;
    # examples and fuzzing check that the answers behind the token conform too.
    check_report(*run_schemathesis(server, tokens.admin, tmp_path, "examples,fuzzing"), server)


def test_an_empty_prompt_and_a_huge_offset_are_answered_not_500(server, tokens):
    """Two 500s the fuzz found: a prompt of zero tokens (engine crash) and an OFFSET past
    DuckDB's BIGINT."""
    with httpx.Client(base_url=server.url, headers=tokens.admin, timeout=120) as client:
        for body in ({"prompt": ""}, {"segments": {"prefix": "", "suffix": ""}}):
            r = client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == "" and r.json()["usage"]["prompt_tokens"] == 0
        r = client.get("/v1/logs", params={"offset": 2**80})
        assert r.status_code == 422 and "offset" in r.json()["error"], r.text
        assert client.get("/v1/logs", params={"offset": 2**63 - 1}).json() == {"rows": []}


# --- auth on: what a request without a good token gets, on every /v1 operation ------------
def v1_operations(url: str) -> list[tuple[str, str]]:
    spec = httpx.get(url + "/openapi.json", timeout=30).json()
    ops = [(method.upper(), path) for path, item in spec["paths"].items() for method in item if path.startswith("/v1/")]
    assert len(ops) >= 10, ops
    return ops


def concrete(path: str) -> str:
    return path.replace("{name}", "nope").replace("{exp_id}", "nope").replace("{user}", "nobody").replace("{review_id}", "nope")


def test_with_auth_on_every_v1_route_refuses_a_missing_or_wrong_token_with_401(server, tokens):
    ops = v1_operations(server.url)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
            for method, path in ops:
                r = client.request(method, concrete(path), json={} if method == "POST" else None, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert isinstance(r.json().get("error"), str) and r.json()["error"], r.text
        # The admin token the fuzz used does open them (the answer is then about the request).
        for method, path in ops:
            r = client.request(method, concrete(path), json={} if method == "POST" else None, headers=tokens.admin)
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.status_code, r.text)


ADMIN_ROUTES = {("POST", "/v1/adapters"), ("POST", "/v1/adapters/{name}/promote"), ("DELETE", "/v1/adapters/{name}"),
                ("POST", "/v1/experiments"), ("POST", "/v1/experiments/{exp_id}/stop"), ("GET", "/v1/feedback/export"),
                ("GET", "/v1/logs"), ("DELETE", "/v1/users/{user}"), ("POST", "/v1/reviews"), ("GET", "/v1/reviews"),
                ("GET", "/v1/reviews/{review_id}"), ("POST", "/v1/reviews/{review_id}/close"),
                ("DELETE", "/v1/reviews/{review_id}")}


def test_with_auth_on_a_user_token_gets_403_on_admin_routes_only(server, tokens):
    ops = v1_operations(server.url)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for method, path in ops:
            r = client.request(method, concrete(path), json={} if method == "POST" else None, headers=tokens.user)
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            if (method, path) in ADMIN_ROUTES:
                assert r.status_code == 403 and "admin" in r.json()["error"], (method, path, r.status_code, r.text)
            else:
                assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)
