"""The one client of codeloop's HTTP API (codeloop/api_client.py), against a real server: a
refusal carries the status and the server's own reason, an unreachable server says so."""
from __future__ import annotations

import pytest

from codeloop.api_client import ApiClient, ApiError
from tests.conftest import free_port


def test_answers_and_refusals(server):
    with ApiClient(server.url) as api:
        assert "adapters" in api.adapters() and api.reachable()
        assert isinstance(api.get("/v1/logs", limit=1, user=None)["rows"], list)  # None params are left out
        with pytest.raises(ApiError) as refused:
            api.unload("no-such-adapter@1")
    err = refused.value
    assert err.status == 404 and not err.unreachable and "no-such-adapter@1" in err.reason
    assert str(err).startswith("DELETE /v1/adapters/no-such-adapter@1 refused (404): ")
    with ApiClient(server.url) as api, pytest.raises(ApiError) as bad:
        api.post("/v1/completions", {"segments": {"prefix": 5}})
    assert bad.value.status == 422 and bad.value.reason


def test_an_unreachable_server_is_named():
    url = f"http://127.0.0.1:{free_port()}"
    with ApiClient(url) as api:
        assert not api.reachable()
        with pytest.raises(ApiError) as gone:
            api.adapters()
    err = gone.value
    assert err.unreachable and err.status is None and not err.timed_out
    assert url in str(err) and "codeloop serve" in str(err) and "--server" in str(err)
