"""Names in codeloop's API that every part must spell the same way."""
from __future__ import annotations

# The base model, with no adapter: what requests ask for, and what reports, metrics, A/B arms
# and the dashboard call it (None inside the server, "base" on the wire; server/adapters.py
# turns one into the other).
BASE = "base"
