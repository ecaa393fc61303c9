"""Qwen2 / Qwen2.5: Llama-like with Q/K/V biases; llama.cpp's qwen2 graph uses NEOX RoPE (no permutation)."""

from __future__ import annotations

from ..convert import register_arch
from . import ArchConverter


@register_arch("Qwen2ForCausalLM")
class Qwen2Converter(ArchConverter):
    gguf_arch = "qwen2"
