"""`codeloop/status`: what an editor's status bar shows, asked of the completion server.

- `adapter`: the live adapter ("base" when none is, as the API names the base model);
- `experiment` / `arm`: the A/B experiment and arm of the last completion this language
  server received (the server assigns arms per user, so that is this user's arm);
- `today`: acceptance of today's (UTC) suggestions for the adapter this user is served (the
  arm's adapter in an experiment, else the live one): shown, accepted, acceptanceRate.

Never raises: an unreachable server gives `reachable: false` and `error` saying why, so the
status bar can say so.
"""
from __future__ import annotations

from datetime import datetime, timezone

from codeloop.names import BASE
from lsp.client import ServerClient, ServerUnavailable



async def server_status(client: ServerClient, now: datetime | None = None) -> dict:
    route = client.last_route
    in_experiment = route is not None and route.experiment is not None
    status = {"serverUrl": client.base_url, "reachable": False, "adapter": None, "baseModel": None,
              "experiment": route.experiment if in_experiment else None, "arm": route.arm if in_experiment else None,
              "today": None, "error": None}
    try:
        adapters = await client.get("/v1/adapters")
    except ServerUnavailable as exc:
        status["error"] = f"completion server unavailable at {client.base_url}: {exc}"
        return status
    status.update(reachable=True, adapter=adapters.get("live") or BASE, baseModel=adapters.get("base_model"))
    served = (route.adapter or BASE) if in_experiment else status["adapter"]
    day = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        rows = (await client.get("/v1/metrics/acceptance", {"by": "day", "since": day.isoformat(), "adapter": served}))["rows"]
    except ServerUnavailable as exc:  # e.g. telemetry is off on that server
        status["error"] = f"no acceptance figures: {exc}"
        return status
    shown = sum(r["shown"] for r in rows)
    accepted = sum(r["accepted"] for r in rows)
    status["today"] = {"adapter": served, "shown": shown, "accepted": accepted,
                       "acceptanceRate": accepted / shown if shown else None}
    return status
