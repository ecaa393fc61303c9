"""Phi-3: fused QKV and fused gate+up projections, kept fused (llama.cpp splits them at run time).

Long-context variants (rope type longrope/su) carry per-frequency factors as two tensors.
"""

from __future__ import annotations

import math

from ..convert import register_arch
from . import ArchConverter
from ...errors import ConversionError


@register_arch("Phi3ForCausalLM")
class Phi3Converter(ArchConverter):
    gguf_arch = "phi3"

    def rope_dimensions(self) -> int:
        c = self.config
        return int(float(c.rope().get("partial_rotary_factor", c.get("partial_rotary_factor", default=1.0)))
                   * c.hidden) // c.n_head

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

    def check_loadable(self, vocab, model_name: str) -> None:
        # llama.cpp sets token attributes by *name* for models called phi3/phi-3 and aborts
        # when these tokens are absent.
        if any(k in model_name.lower() for k in ("phi3", "phi-3")):
            missing = [t for t in ("<unk>", "<s>", "</s>", "<|endoftext|>") if t not in vocab.tokens]
            if missing:
                raise ConversionError(f"a model named {model_name!r} needs tokens {missing} for llama.cpp",
                                      hint="pass another --name, or use the model's own tokenizer")

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
