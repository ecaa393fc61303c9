"""Mistral: a Llama graph in llama.cpp (same tensors, same Q/K permutation).

llama.cpp's llama graph has no sliding window; Mistral v0.2+ has none either. v0.1's 4096
window only matters beyond 4096 tokens of context.
"""

from __future__ import annotations

from ..convert import register_arch
from . import ArchConverter


@register_arch("MistralForCausalLM")
class MistralConverter(ArchConverter):
    gguf_arch = "llama"
    permute_qk = True
