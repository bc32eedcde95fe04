"""The dashboard in a real browser (Debian's Chromium driven by playwright) against the real
server on a real, seeded telemetry DuckDB: what the charts draw must be what was seeded.

Needs /usr/bin/chromium (`apt-get install chromium`; `make install-test` does it) and the
`playwright` package; playwright never downloads a browser here.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest

from feedback import stats
from tests.conftest import REPO, start_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # fmt: skip

# --- what is seeded -------------------------------------------------------------------------
TEAM = "team-py@1"  # seen in the telemetry only: never loaded into the engine
LOADED = "team-py@2"  # loaded (zero LoRA weights) with trainer metrics in its codeloop.json
ADAPTERS = {"base": None, TEAM: TEAM}  # API name -> completions.adapter
SHOWN_PER_DAY = 200  # per adapter and day, plus UNSHOWN completions that never reach a screen
UNSHOWN = 10
ACCEPTED = {"base": [52, 60, 68], TEAM: [88, 100, 108]}  # per day: 26/30/34 % and 44/50/54 %
TEXT_CHARS = {"base": 20, TEAM: 30}
RETAINED = {"base": 0.5, TEAM: 0.8}  # ratio reported at 2 min for every accepted suggestion
USERS = 4  # per adapter; every user sees SHOWN_PER_DAY / USERS suggestions a day
EXPERIMENT_DAYS = (1, 2)  # day indexes whose suggestions belong to the experiment
# Users are what is randomised; the experiment's users all accept at their arm's rate, so the
# design effect is exactly 1 and the report's Wilson intervals are those of the raw counts.
EXPERIMENT = {"id": "py-rollout-1a2b3c", "name": 'py <b>rollout</b> & "quotes" <img src=x onerror="window.__pwned=1">'}
TRAINER_METRICS = {"exact_match": 0.412, "edit_similarity": 0.771, "loss": 1.234}


def _days() -> list[datetime]:
    today = datetime.now(timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return [today - timedelta(days=3 - i) for i in range(3)]  # the three days before today


def _latency(name: str, i: int) -> float:
    return 40 + (i * 7919 % 97) * 1.5 if name == "base" else 60 + (i * 7919 % 131) * 2.25


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def seed(db_path: Path) -> dict:
    """Write the completions, events and the experiment through the real writer; return
    what the dashboard must show."""
    from feedback.writer import TelemetryWriter

    days = _days()
    expected = {"rates": {}, "latency": {}, "arms": {}, "per_user": {}}
    writer = TelemetryWriter(db_path).start()
    try:
        events = []
        for name, adapter in ADAPTERS.items():
            latencies, i = [], 0
            for d, day in enumerate(days):
                in_exp = d in EXPERIMENT_DAYS
                per_user = _split(ACCEPTED[name][d], USERS)
                n = 0
                for u in range(USERS):
                    for k in range(SHOWN_PER_DAY // USERS):
                        created = day + timedelta(hours=8, seconds=n * 20)
                        cid = f"cmpl-{name}-{d}-{u}-{k}"
                        ms = _latency(name, i)
                        latencies.append(ms)
                        writer.add_completion({
                            "id": cid, "created_at": created, "user_id": f"user-{name}-{u}", "client": "vscode",
                            "language": "python", "adapter": adapter, "text": "x" * TEXT_CHARS[name], "total_ms": ms,
                            "experiment": EXPERIMENT["id"] if in_exp else None, "arm": name if in_exp else None,
                        })  # fmt: skip
                        events.append({"completion_id": cid, "kind": "shown", "at": created + timedelta(seconds=1)})
                        if k < per_user[u]:
                            events.append({"completion_id": cid, "kind": "accepted", "at": created + timedelta(seconds=2)})
                            events.append({"completion_id": cid, "kind": "retained", "at": created + timedelta(seconds=122),
                                           "retained_ratio": RETAINED[name], "age_s": 120.0})  # fmt: skip
                        n, i = n + 1, i + 1
                for k in range(UNSHOWN):  # served, never shown: count for latency, not for rates
                    ms = _latency(name, i)
                    latencies.append(ms)
                    writer.add_completion({"id": f"cmpl-{name}-{d}-unshown-{k}", "created_at": day + timedelta(hours=20, seconds=k),
                                           "adapter": adapter, "text": "y", "total_ms": ms})  # fmt: skip
                    i += 1
                expected["rates"][(name, day.date().isoformat())] = (ACCEPTED[name][d], SHOWN_PER_DAY)
                if in_exp:
                    for u, acc in enumerate(per_user):
                        user = expected["per_user"].setdefault(name, [[0, 0] for _ in range(USERS)])[u]
                        user[0] += acc
                        user[1] += SHOWN_PER_DAY // USERS
            expected["latency"][name] = {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)}
            expected["arms"][name] = (sum(ACCEPTED[name][d] for d in EXPERIMENT_DAYS), SHOWN_PER_DAY * len(EXPERIMENT_DAYS))
        for start in range(0, len(events), 1000):
            writer.add_events(events[start:start + 1000]).result(60)
        row = (EXPERIMENT["id"], EXPERIMENT["name"], json.dumps({"weights": {"base": 50, TEAM: 50}, "users": None}), "base",
               "running", days[EXPERIMENT_DAYS[0]], None, None, 0.05, "{}")  # fmt: skip
        writer.execute(lambda con: con.execute("INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)).result(60)
    finally:
        writer.close()
    return expected


def write_adapter(model_dir: Path, folder: Path) -> None:
    """A valid LoRA adapter for the served model without torch: zero lora_B, so it changes nothing."""
    from safetensors.numpy import save_file

    cfg = json.loads((model_dir / "config.json").read_text())
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    out = {"q_proj": heads * head_dim, "v_proj": kv * head_dim}
    rank = 2
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for module, width in out.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = np.full((rank, hidden), 0.01, dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = np.zeros((width, rank), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": str(model_dir), "r": rank, "lora_alpha": 4,
        "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none", "task_type": "CAUSAL_LM",
    }))  # fmt: skip
    (folder / "codeloop.json").write_text(json.dumps({"metrics": TRAINER_METRICS, "repos": ["example/repo"]}))


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            "!!! DASHBOARD BROWSER TEST SKIPPED: /usr/bin/chromium is missing. Install Debian's Chromium "
            "(`apt-get install -y chromium`, done by `make install-test`); playwright must not download browsers. !!!"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="!!! DASHBOARD BROWSER TEST SKIPPED: pip install playwright (the 'test' extra) !!!")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_dashboard(browser, url: str, screenshot: Path, *, check_refresh: bool = False) -> dict:
    """Load / in a fresh page, wait for the first full draw, read every drawn mark.
    check_refresh: also move the page's clock 31 s on and wait for the automatic redraw."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.clock.install()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(url + "/", wait_until="domcontentloaded")
        page.wait_for_selector('body[data-loaded="1"]', timeout=30_000)
        refreshed = None
        if check_refresh:
            page.clock.fast_forward(31_000)
            page.wait_for_selector('body[data-refreshes="2"]', timeout=15_000)
            refreshed = page.get_attribute("body", "data-refreshes")
        marks = page.eval_on_selector_all("[data-mark]", "els => els.map(e => ({...e.dataset, text: e.textContent}))")
        empties = page.eval_on_selector_all("[data-empty]", "els => els.map(e => e.dataset.empty)")
        text = page.inner_text("body")
        pwned = page.evaluate("() => window.__pwned === 1 || !!document.querySelector('#experiment-body b img, #experiment-body img')")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    by_mark: dict[str, list[dict]] = {}
    for m in marks:
        by_mark.setdefault(m["mark"], []).append(m)
    return {"marks": by_mark, "empties": empties, "text": text, "problems": problems, "pwned": pwned, "refreshed": refreshed}


@pytest.fixture(scope="module")
def seeded(model_dir, tmp_path_factory, browser):
    data_dir = tmp_path_factory.mktemp("dashboard-seeded")
    expected = seed(data_dir / "telemetry.duckdb")
    write_adapter(model_dir, data_dir / "adapters" / "team-py-2")
    server = start_server(model_dir, data_dir)
    try:
        r = httpx.post(server.url + "/v1/adapters", json={"name": LOADED, "path": str(data_dir / "adapters" / "team-py-2")}, timeout=120)
        assert r.status_code == 201, r.text
        assert httpx.post(server.url + f"/v1/adapters/{LOADED}/promote", timeout=60).status_code == 200
        page = open_dashboard(browser, server.url, ARTIFACTS / "dashboard.png", check_refresh=True)
        api = {
            "by_adapter": httpx.get(server.url + "/v1/metrics/acceptance?by=adapter", timeout=30).json()["rows"],
            "adapters": httpx.get(server.url + "/v1/adapters", timeout=30).json(),
        }
        yield {"expected": expected, "page": page, "api": api}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def empty(model_dir, tmp_path_factory, browser):
    server = start_server(model_dir, tmp_path_factory.mktemp("dashboard-empty"))
    try:
        yield {**open_dashboard(browser, server.url, ARTIFACTS / "dashboard-empty.png"), "server": server}
    finally:
        server.stop()


# --- tests ----------------------------------------------------------------------------------
def test_page_loads_without_errors_and_escapes_user_text(seeded):
    page = seeded["page"]
    assert page["problems"] == []
    assert not page["pwned"], "the experiment name was rendered as HTML"
    assert EXPERIMENT["name"] in page["text"]  # shown literally
    for link in ("API docs", "Prometheus metrics"):
        assert link in page["text"]
    assert page["empties"] == []
    assert page["refreshed"] == "2"  # redrawn by itself after 30 s (the marks below are from the redraw)


def test_acceptance_lines_are_the_seeded_rates(seeded):
    points = seeded["page"]["marks"]["rate-point"]
    drawn = {(p["adapter"], p["day"]): (float(p["rate"]), int(p["accepted"]), int(p["shown"])) for p in points}
    assert len(points) == len(drawn) == len(seeded["expected"]["rates"])
    for key, (accepted, shown) in seeded["expected"]["rates"].items():
        assert drawn[key] == (pytest.approx(accepted / shown, abs=1e-12), accepted, shown), key
    assert {line["adapter"] for line in seeded["page"]["marks"]["rate-line"]} == {"base", TEAM}
    legend = {m["adapter"]: m["text"] for m in seeded["page"]["marks"]["legend"]}
    assert "base model" in legend["base"] and TEAM in legend[TEAM] and "54.0 %" in legend[TEAM]


def test_experiment_arms_have_the_wilson_intervals_of_the_seeded_counts(seeded):
    expected = seeded["expected"]
    for name, users in expected["per_user"].items():  # the seed's premise: no clustering
        assert stats.effective_counts([tuple(u) for u in users])[2] == 1.0
    arms = {a["arm"]: a for a in seeded["page"]["marks"]["arm"]}
    assert set(arms) == {"base", TEAM}
    for name, (accepted, shown) in expected["arms"].items():
        low, high = stats.wilson_interval(accepted, shown)
        arm = arms[name]
        assert (int(arm["accepted"]), int(arm["shown"])) == (accepted, shown)
        assert float(arm["rate"]) == pytest.approx(accepted / shown, abs=1e-12)
        assert float(arm["low"]) == pytest.approx(low, abs=1e-12) and float(arm["high"]) == pytest.approx(high, abs=1e-12)
        assert f"{accepted / shown * 100:.1f} %  [{low * 100:.1f} % – {high * 100:.1f} %]" in arm["text"]
    assert arms["base"]["control"] == "true" and arms[TEAM]["control"] == "false"
    report = stats.compare_arms(expected["arms"], "base", alpha=0.05)
    assert report.winner == TEAM  # 32 % vs 52 % on 400 suggestions each: the sequential test decides
    (comparison,) = seeded["page"]["marks"]["comparison"]
    assert comparison["arm"] == TEAM and comparison["decision"] == "difference"
    assert float(comparison["effect"]) == pytest.approx(0.2, abs=1e-12)
    (winner,) = seeded["page"]["marks"]["winner"]
    assert winner["winner"] == TEAM and "Winner" in winner["text"]
    assert arms[TEAM]["winner"] == "true"
    (exp,) = seeded["page"]["marks"]["experiment"]
    assert exp["id"] == EXPERIMENT["id"] and exp["status"] == "running"


def test_latency_and_character_metrics_match_the_api(seeded):
    api = {(r["key"] or "base"): r for r in seeded["api"]["by_adapter"]}
    bars = {(b["adapter"], b["percentile"]): float(b["ms"]) for b in seeded["page"]["marks"]["latency-bar"]}
    assert len(bars) == 6
    for name, percentiles in seeded["expected"]["latency"].items():
        for p, value in percentiles.items():
            assert api[name][f"latency_{p}_ms"] == pytest.approx(value, rel=1e-9)  # DuckDB quantile_cont = numpy
            assert bars[(name, p)] == api[name][f"latency_{p}_ms"]
    chars = {b["adapter"]: float(b["value"]) for b in seeded["page"]["marks"]["chars-bar"]}
    retained = {b["adapter"]: float(b["value"]) for b in seeded["page"]["marks"]["retained-bar"]}
    for name in ADAPTERS:
        total = sum(ACCEPTED[name])
        assert chars[name] == pytest.approx(total * TEXT_CHARS[name] / (3 * SHOWN_PER_DAY), abs=1e-12)
        assert chars[name] == api[name]["accepted_chars_per_shown"]
        assert retained[name] == pytest.approx(RETAINED[name], abs=1e-12) == api[name]["retained_120s"]


def test_adapter_table_joins_the_registry_and_the_telemetry(seeded):
    rows = {r["adapter"]: r for r in seeded["page"]["marks"]["adapter-row"]}
    assert list(rows) == [LOADED, TEAM, "base"]  # loaded first (newest first), then telemetry-only, then base
    assert rows[LOADED]["status"] == "live" and rows[LOADED]["shown"] == "0"
    for key, value in TRAINER_METRICS.items():
        assert f"{key} {value:.3f}" in rows[LOADED]["text"]
    assert rows[TEAM]["status"] == "not loaded" and rows[TEAM]["loaded"] == "false"
    for name in ADAPTERS:
        assert int(rows[name]["shown"]) == 3 * SHOWN_PER_DAY
        assert float(rows[name]["rate"]) == pytest.approx(sum(ACCEPTED[name]) / (3 * SHOWN_PER_DAY), abs=1e-12)
    kpis = {k["kpi"]: k for k in seeded["page"]["marks"]["kpi"]}
    assert int(kpis["shown"]["value"]) == 2 * 3 * SHOWN_PER_DAY
    assert int(kpis["completions"]["value"]) == 2 * 3 * (SHOWN_PER_DAY + UNSHOWN)
    assert int(kpis["adapters"]["value"]) == 1
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_empty_server_says_there_is_no_data_yet(empty):
    assert empty["problems"] == []
    assert set(empty["empties"]) >= {"acceptance", "experiment", "latency", "quality", "adapters"}
    assert "No suggestions recorded yet." in empty["text"] and "No A/B experiment yet." in empty["text"]
    for mark in ("rate-point", "arm", "latency-bar", "chars-bar"):
        assert mark not in empty["marks"]
    assert [r["adapter"] for r in empty["marks"]["adapter-row"]] == ["base"]


def test_with_auth_on_the_page_asks_for_a_token_then_shows_the_data(empty, browser):
    """Runs last: the first token turns auth on for the `empty` server."""
    import subprocess
    import sys

    server = empty["server"]
    made = subprocess.run([sys.executable, "-m", "codeloop.cli", "token", "create", "--user", "viewer"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "CODELOOP_DATA_DIR": str(server.data_dir),
                                                      "CODELOOP_CONFIG": os.devnull})
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(server.url + "/", wait_until="domcontentloaded")
        page.wait_for_selector("#token-form:not([hidden])", timeout=30_000)
        assert "needs `Authorization: Bearer <token>`" in page.inner_text("body")  # the server's 401, shown
        assert page.query_selector('[data-mark="adapter-row"]') is None  # nothing fetched without a token
        # One prompt, not every panel red with the refusal and counters at zero.
        assert page.is_hidden("#app") and page.inner_text("body").count("Authorization: Bearer") == 1
        page.fill("#token", token)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector('[data-mark="adapter-row"]', timeout=30_000)
        assert page.is_hidden("#token-form") and page.is_visible("#app")
        assert page.evaluate("() => localStorage.getItem('codeloop.token')") == token
        page.screenshot(path=str(ARTIFACTS / "dashboard-token.png"), full_page=True)
    finally:
        page.close()

