"""Gemma 3 (text): norms stored as weight - 1, sandwich norms, Q/K norms, local/global layers.

- Gemma3RMSNorm multiplies by (1 + weight); llama.cpp multiplies by weight: add 1 to every norm.
- Sliding-window layers use their own RoPE base; which layers slide is written per layer.
- Embeddings are tied (no output tensor): llama.cpp reuses token_embd.
- The tokenizer never prepends a space.
"""

from __future__ import annotations

from ..convert import register_arch
from . import ArchConverter
from ...errors import ConversionError


@register_arch("Gemma3ForCausalLM")
class Gemma3Converter(ArchConverter):
    gguf_arch = "gemma3"
    norm_offset = 1.0
    default_rope_theta = 1_000_000.0

    def add_hparams(self, writer) -> None:
        super().add_hparams(writer)
        c = self.config
        local = c.rope("sliding_attention").get("rope_theta", c.get("rope_local_base_freq", default=10_000.0))
        writer.add_rope_freq_base_swa(float(local))
        if c.get("sliding_window"):
            writer.add_sliding_window(int(c.get("sliding_window")))
            writer.add_sliding_window_pattern(self.sliding_layers())
        if c.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(float(c.get("final_logit_softcapping")))
        scalar = c.get("query_pre_attn_scalar", default=c.head_dim)
        # llama.cpp hard-codes the attention scale: 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for 27B.
        if scalar not in (c.head_dim, c.hidden // c.n_head if c.n_layers == 62 else c.head_dim):
            raise ConversionError(f"query_pre_attn_scalar {scalar} != head_dim {c.head_dim}: llama.cpp cannot run it")

    def sliding_layers(self) -> list[bool]:
        c = self.config
        kinds = c.get("layer_types")
        if kinds:
            return [kind == "sliding_attention" for kind in kinds]
        period = int(c.get("sliding_window_pattern", "_sliding_window_pattern", default=6))
        return [(i + 1) % period != 0 for i in range(c.n_layers)]

    def expected_shape(self, name: str):
        if ".post_attention_norm." in name or ".post_ffw_norm." in name:
            return (self.config.hidden,)
        return super().expected_shape(name)

    def adjust_vocabulary(self, vocab) -> None:
        vocab.add_space_prefix = False
