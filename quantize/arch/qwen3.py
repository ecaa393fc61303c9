"""Qwen3: Qwen2 without Q/K/V biases, with per-head RMS norms on Q and K (attn_q_norm/attn_k_norm)."""

from __future__ import annotations

from ..convert import register_arch
from . import ArchConverter


@register_arch("Qwen3ForCausalLM")
class Qwen3Converter(ArchConverter):
    gguf_arch = "qwen3"
