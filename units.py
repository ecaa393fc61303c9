"""Small arithmetic and formatting every layer shares: byte sizes for people, rounding up."""

from __future__ import annotations

GIB = 1024**3


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as `du -h`)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def format_gib(n_bytes: float) -> str:
    """Memory as the planner reports it: '0.28 GiB', '12.5 GiB'."""
    value = n_bytes / GIB
    return f"{value:.2f} GiB" if abs(value) < 1 else f"{value:.1f} GiB"


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple
