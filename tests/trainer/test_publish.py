"""The promotion gate, through a real `codeloop serve`: a significant held-out gain over the
live model promotes; a gain that is not significant, or too few examples, does not (the
adapter is not even loaded); the comparison is written into the adapter's codeloop.json."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import start_server
from trainer.config import PublishConfig
from trainer.publish import gate, publish, write_adapter
from codeloop.api_client import ApiClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gate_server(model_dir, tmp_path_factory):
    """Its own server: these tests promote adapters, which the shared server must not see."""
    server = start_server(model_dir, tmp_path_factory.mktemp("gate-server"))
    yield server
    server.stop()


@pytest.fixture
def api(gate_server):
    client = ApiClient(gate_server.url)
    yield client
    client.close()


def scored(both: int, base_only: int, cand_only: int, neither: int, *, against: str = "base") -> dict:
    """Results as evaluate() gives them: per-example lists in one example order for all labels."""
    base = [True] * both + [True] * base_only + [False] * cand_only + [False] * neither
    cand = [True] * both + [False] * base_only + [True] * cand_only + [False] * neither

    def label(right: list[bool]) -> dict:
        sims = [1.0 if r else 0.5 for r in right]
        return {"n": len(right), "exact_match_line": sum(right) / len(right), "edit_sim_line": sum(sims) / len(sims),
                "per_example": {"exact_match_line": right, "edit_sim_line": sims}}

    return {against: label(base), "candidate": label(cand)}


def state(server) -> dict:
    return httpx.get(server.url + "/v1/adapters", timeout=30).json()


def candidate(gate_server, make_adapter, name: str):
    return write_adapter(make_adapter(31, scale=0.1), gate_server.adapters_dir, name, {"fim_template": "smollm-fim"})


def codeloop_json(folder) -> dict:
    return json.loads((folder / "codeloop.json").read_text())


def test_significant_gain_over_base_promotes_and_records_the_gate(gate_server, api, make_adapter):
    folder = candidate(gate_server, make_adapter, "gate@1")
    results = scored(both=20, base_only=2, cand_only=25, neither=73)  # n = 120
    decision = publish(api, "gate@1", folder, None, results, PublishConfig(action="promote"))
    try:
        assert decision.action == "promoted", decision.reason
        assert state(gate_server)["live"] == "gate@1"
        recorded = codeloop_json(folder)["gate"]
        assert recorded["decision"] == "promote" and recorded["against"] == "base" and recorded["against_model"] == "base"
        comparison = recorded["comparison"]
        assert comparison["n"] == 120 and comparison["cand_only"] == 25 and comparison["base_only"] == 2
        assert comparison["exact_gain"] == pytest.approx(23 / 120) and comparison["exact_low"] > 0
        assert comparison["p_value"] < 1e-4 and comparison["edit_sim_gain"] > 0
        assert codeloop_json(folder)["fim_template"] == "smollm-fim"  # the rest of the file kept
        assert not (folder / ".codeloop.json.tmp").exists()
        served = next(a for a in state(gate_server)["adapters"] if a["name"] == "gate@1")
        assert served["metadata"]["gate"] == recorded  # the server read it at registration
        assert decision.gate == recorded
    finally:
        httpx.post(gate_server.url + "/v1/adapters/base/promote", timeout=60).raise_for_status()


def test_gain_that_is_not_significant_is_not_promoted(gate_server, api, make_adapter):
    before = state(gate_server)
    folder = candidate(gate_server, make_adapter, "gate@2")
    # Better on paper (6 to 3 of 150), but that split happens by chance a quarter of the time.
    results = scored(both=30, base_only=3, cand_only=6, neither=111)
    decision = publish(api, "gate@2", folder, None, results, PublishConfig(action="promote"))
    assert decision.action == "not_published"
    assert "not a significant gain" in decision.reason and "p = 0.508" in decision.reason, decision.reason
    assert state(gate_server) == before  # not loaded, nothing promoted
    recorded = codeloop_json(folder)["gate"]
    assert recorded["decision"] == "do_not_promote" and recorded["comparison"]["exact_gain"] == pytest.approx(3 / 150)
    assert recorded["comparison"]["p_value"] == pytest.approx(0.5078125)


def test_too_few_examples_is_not_promoted_and_says_what_to_change(gate_server, api, make_adapter):
    before = state(gate_server)
    folder = candidate(gate_server, make_adapter, "gate@3")
    results = scored(both=0, base_only=0, cand_only=40, neither=0)  # all 40 better: still too few
    decision = publish(api, "gate@3", folder, None, results, PublishConfig(action="promote"))
    assert decision.action == "not_published"
    assert "40 evaluated, 100 needed" in decision.reason
    assert "trainer.eval.max_examples" in decision.reason and "trainer.publish.min_gate_examples" in decision.reason
    assert state(gate_server) == before
    recorded = codeloop_json(folder)["gate"]
    assert recorded["n"] == 40 and recorded["comparison"] is None and recorded["decision"] == "do_not_promote"

    fewer = PublishConfig(action="promote", min_gate_examples=40)  # lowered: now judged, and significant
    assert gate(results, fewer).passed


def test_the_gate_compares_with_the_live_adapter_when_there_is_one():
    results = scored(both=50, base_only=0, cand_only=30, neither=40, against="live")
    results["base"] = scored(both=0, base_only=0, cand_only=0, neither=120)["candidate"]  # far worse: not the bar
    result = gate(results, PublishConfig(), live="team@4")
    assert result.passed and result.against == "live" and result.against_model == "team@4"
    assert "vs live (team@4) 0.417" in result.reason

    worse = scored(both=50, base_only=30, cand_only=0, neither=40, against="live")
    result = gate(worse, PublishConfig(), live="team@4")
    assert not result.passed and result.comparison.p_value < 1e-6 and result.comparison.exact_gain < 0


def test_min_gain_still_applies_to_a_significant_gain():
    results = scored(both=20, base_only=2, cand_only=25, neither=73)
    assert gate(results, PublishConfig()).passed
    assert not gate(results, PublishConfig(min_gain=0.25)).passed  # gain 0.19


def test_gate_refuses_lists_of_different_lengths():
    results = scored(both=20, base_only=2, cand_only=25, neither=73)
    results["candidate"]["per_example"]["exact_match_line"].pop()
    with pytest.raises(ValueError, match="same examples"):
        gate(results, PublishConfig())
