"""Names in codeloop's API that every part must spell the same way."""
from __future__ import annotations

# The base model, with no adapter: what requests ask for, and what reports, metrics, A/B arms
# and the dashboard call it (None inside the server, "base" on the wire; server/adapters.py
# turns one into the other).
BASE = "base"

# An A/B arm named "<adapter>+no-context" serves that adapter without repository context
# (the request's snippets left out), to measure what context is worth to acceptance.
NO_CONTEXT = "+no-context"


def split_arm(arm: str) -> tuple[str, bool]:
    """An experiment arm -> (adapter name or BASE, whether snippets go into the prompt)."""
    if arm.endswith(NO_CONTEXT):
        return arm[: -len(NO_CONTEXT)], False
    return arm, True
