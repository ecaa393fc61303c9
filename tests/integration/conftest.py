"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest
from hub_server import start_hub


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A hub-compatible HTTP server on 127.0.0.1 (random port), HF_ENDPOINT pointed at it."""
    server = start_hub(tmp_path / "hub-root", monkeypatch)
    yield server
    server.stop()
