"""Llama (and SmolLM, Llama 2/3): the reference decoder; Q/K rows permuted for llama.cpp's RoPE.

Llama 3.1+ "llama3" RoPE scaling has no GGUF key: llama.cpp reads a `rope_freqs` tensor of
per-frequency divisors, computed here from the config.
"""

from __future__ import annotations

import math

from ..convert import register_arch
from . import ArchConverter


@register_arch("LlamaForCausalLM")
class LlamaConverter(ArchConverter):
    gguf_arch = "llama"
    permute_qk = True

    def extra_tensors(self):
        import numpy as np

        rope = self.config.rope()
        if rope.get("rope_type") != "llama3":
            return []
        factors = llama3_rope_factors(
            self.config.head_dim, float(rope.get("rope_theta", 10000.0)), float(rope.get("factor", 8.0)),
            float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0)),
            int(rope.get("original_max_position_embeddings", 8192)))
        return [("rope_freqs.weight", np.asarray(factors, dtype=np.float32))]


def llama3_rope_factors(dim: int, base: float, factor: float, low: float, high: float, old_ctx: int) -> list[float]:
    """Divisor per RoPE frequency: long wavelengths are stretched by `factor`, short ones kept."""
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out
