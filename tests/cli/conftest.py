from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture
def hearth():
    """Run the real `hearth` program; returns CompletedProcess (stdout/stderr as text)."""

    def run(*args: str, input: str | None = None, timeout: float = 120, env: dict | None = None):
        full_env = dict(os.environ, **(env or {}))
        full_env.setdefault("HF_HUB_OFFLINE", "1")
        return subprocess.run([sys.executable, "-m", "hearth.cli", *args], input=input, capture_output=True,
                              text=True, timeout=timeout, env=full_env,
                              stdin=None if input is not None else subprocess.DEVNULL)

    return run
