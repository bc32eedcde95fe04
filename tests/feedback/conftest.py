"""Fixtures for the telemetry store: real DuckDB files under tmp_path."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from feedback.writer import TelemetryWriter


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "telemetry.duckdb"


@pytest.fixture
def writer(db_path: Path):
    """A started writer that commits at once (no linger) and is closed after the test."""
    w = TelemetryWriter(db_path, flush_interval_s=0.0, retry_max_s=0.05).start()
    yield w
    w.close(timeout=5)
