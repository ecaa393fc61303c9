"""Models made by `hearth convert` / `hearth quantize`, registered by name under HEARTH_HOME.

`hearth run -m NAME` finds the newest file registered as NAME; `NAME:Q4_K_M` picks a quant.
The registry is one JSON file, rewritten atomically; entries whose file is gone are reported,
not silently skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..paths import atomic_write, data_dir


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    quant: str
    path: str
    source: str  # the checkpoint folder or repo id it was converted from
    created: float


def registry_path() -> Path:
    return data_dir("converted") / "registry.json"


def models_dir(name: str) -> Path:
    """Where converted files go by default."""
    return data_dir("converted", safe_name(name))


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "model"


def list_registered() -> list[RegisteredModel]:
    path = registry_path()
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("models", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return []
    return [RegisteredModel(**row) for row in rows if isinstance(row, dict)]


def register(name: str, quant: str, path: str | Path, source: str) -> RegisteredModel:
    """Add (or replace) the entry for NAME:QUANT."""
    entry = RegisteredModel(name, quant.upper(), str(Path(path).resolve()), source, time.time())
    rows = [m for m in list_registered() if not _same(m, name, entry.quant)]
    rows.append(entry)
    with atomic_write(registry_path()) as handle:
        json.dump({"models": [asdict(m) for m in rows]}, handle, indent=2)
    return entry


def entry_for_file(path: str | Path) -> RegisteredModel | None:
    resolved = str(Path(path).resolve())
    return next((m for m in list_registered() if m.path == resolved), None)


def _same(model: RegisteredModel, name: str, quant: str | None) -> bool:
    return model.name.casefold() == name.casefold() and (quant is None or model.quant == quant.upper())


def lookup(ref: str) -> RegisteredModel | None:
    """NAME (newest of its quants) or NAME:QUANT; None when nothing is registered under it."""
    name, _, quant = ref.partition(":")
    matches = [m for m in list_registered() if _same(m, name, quant or None)]
    return max(matches, key=lambda m: m.created) if matches else None


def most_precise(name: str) -> RegisteredModel | None:
    """The registered file of NAME best suited as a quantization source (highest precision)."""
    from .quantize import QUANT_BITS

    matches = [m for m in list_registered() if _same(m, name, None)]
    return max(matches, key=lambda m: (QUANT_BITS.get(m.quant, 0.0), m.created)) if matches else None
