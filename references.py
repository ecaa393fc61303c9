"""Model references resolve here, in one place, above the runtime, the store and the converter.

A reference is a `.gguf` path, `default` (the embedded SmolLM2), `REPO[:QUANT]` from the local
Hugging Face cache (offline), or a name registered by `hearth convert` — tried in that order.
"""

from __future__ import annotations

from .errors import ModelNotFoundError
from .runtime.models import ResolvedModel, resolve_local


def resolve_model(reference: str | None) -> ResolvedModel:
    """Turn what the user typed into a GGUF path, or raise ModelNotFoundError naming it."""
    found = resolve_local(reference)
    if found is not None:
        return found
    ref = reference.strip()
    found = from_store(ref) or from_registry(ref)
    if found is not None:
        return found
    raise ModelNotFoundError(
        f"unknown model {ref!r}: not a file, and not in the local store",
        hint=f"`hearth pull {ref}` downloads it; `hearth list` shows what is here",
    )


def from_store(ref: str) -> ResolvedModel | None:
    """`REPO[:QUANT]` from the Hugging Face cache (offline), or None. Records the use (`hearth list`)."""
    from .hub import store
    from .runtime.hardware import memory_budget_bytes

    found = store.pick_stored(ref, memory_budget_bytes)
    if found is None:
        return None
    store.record_use(found.reference)
    return ResolvedModel(ref, found.reference, found.path, "store")


def from_registry(ref: str) -> ResolvedModel | None:
    """A name registered by `hearth convert` (NAME or NAME:QUANT), or None."""
    from pathlib import Path

    from .quantize import registry

    entry = registry.lookup(ref)
    if entry is None:
        return None
    if not Path(entry.path).is_file():
        raise ModelNotFoundError(f"{ref!r} is registered but its file is gone: {entry.path}",
                                 hint=f"convert it again (hearth convert {entry.source})")
    return ResolvedModel(ref, f"{entry.name} ({entry.quant})", Path(entry.path), "registry")
