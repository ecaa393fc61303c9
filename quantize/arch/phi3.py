"""Phi-3 / Phi-3.5 / Phi-4-mini: fused QKV and fused gate+up projections, kept fused (llama.cpp
splits them at run time).

- Long-context variants (rope type longrope/su) carry per-frequency factors as two tensors.
- Partial rotary (Phi-4-mini: `partial_rotary_factor` 0.75): only the first head_dim x factor
  dims of each head rotate, written as the RoPE dimension count.
- Tied embeddings (Phi-4-mini): no lm_head in the checkpoint, no output tensor in the GGUF;
  llama.cpp's phi3 loader then reuses token_embd.
- Phi-3 ships a SentencePiece vocabulary, Phi-4-mini a GPT-2-style byte-level BPE one with
  the GPT-4o split (`tokenizer.py` handles both).
"""

from __future__ import annotations

import math
import re

from ..convert import register_arch
from . import ArchConverter
from ...errors import ConversionError

# llama.cpp applies Phi-3's special-token whitespace rule to any model whose general.name contains
# "phi3" or "phi-3", looking these tokens up by text; a vocabulary without them fails to load.
_PHI3_NAME = re.compile(r"(phi)-?(3)", re.IGNORECASE)
_PHI3_RULE_TOKENS = ("<unk>", "<s>", "</s>", "<|endoftext|>")


@register_arch("Phi3ForCausalLM")
class Phi3Converter(ArchConverter):
    gguf_arch = "phi3"

    def rope_dimensions(self) -> int:
        c = self.config
        factor = float(c.rope().get("partial_rotary_factor", c.get("partial_rotary_factor", default=1.0)))
        dims = int(c.head_dim * factor)  # as transformers' Phi3RotaryEmbedding rounds it
        if dims < 2 or dims > c.head_dim or dims % 2:
            raise ConversionError(f"partial_rotary_factor {factor} gives {dims} rotary dims of head_dim {c.head_dim}",
                                  hint="llama.cpp rotates an even number of dims, at most head_dim")
        return dims

    def add_hparams(self, writer) -> None:
        super().add_hparams(writer)
        c = self.config
        writer.add_sliding_window(int(c.get("sliding_window", default=0)))
        rope = c.rope()
        orig = rope.get("original_max_position_embeddings", c.get("original_max_position_embeddings"))
        if orig:
            writer.add_rope_scaling_orig_ctx_len(int(orig))
        if rope.get("long_factor"):
            scale = int(c.get("max_position_embeddings")) / int(orig)
            attn = math.sqrt(1 + math.log(scale) / math.log(int(orig))) if scale > 1 else 1.0
            writer.add_rope_scaling_attn_factors(attn)

    def add_rope_scaling(self, writer) -> None:
        kind = self.config.rope().get("rope_type")
        if kind not in (None, "default", "longrope", "su"):
            raise ConversionError(f"Phi-3 RoPE scaling {kind!r} is not supported")

    def gguf_model_name(self, vocab, requested: str) -> str:
        """The requested name, with "phi3" / "phi-3" written "phi 3" when the vocabulary lacks
        the tokens llama.cpp's name-keyed Phi-3 rule needs (Phi-4-mini's byte-level BPE has no
        <unk>, <s>, </s>): the file then loads, and special tokens keep the whitespace after
        them, as Phi-4-mini's HF tokenizer does."""
        if not set(_PHI3_RULE_TOKENS) <= set(vocab.tokens):
            return _PHI3_NAME.sub(r"\1 \2", requested)
        return requested

    def expected_shape(self, name: str):
        c = self.config
        if name.endswith("attn_qkv.weight"):
            return ((c.n_head + 2 * c.n_kv_head) * c.head_dim, c.hidden)
        if name.endswith("ffn_up.weight"):
            return (2 * c.n_ff, c.hidden)
        return super().expected_shape(name)

    def extra_tensors(self):
        import numpy as np

        rope = self.config.rope()
        long, short = rope.get("long_factor"), rope.get("short_factor")
        if not long:
            return []
        if not short or len(long) != len(short) or len(long) != self.rope_dimensions() // 2:
            raise ConversionError(f"rope long/short factors must each have {self.rope_dimensions() // 2} values")
        return [("rope_factors_long.weight", np.asarray(long, dtype=np.float32)),
                ("rope_factors_short.weight", np.asarray(short, dtype=np.float32))]
