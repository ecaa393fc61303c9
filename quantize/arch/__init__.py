"""One module per Hugging Face architecture; this file holds what they share.

Each module subclasses `ArchConverter` and overrides only what differs from a Llama-shaped
decoder: GGUF architecture name, extra config keys, tensor transforms (Q/K permutation, norm
offsets), expected shapes, computed tensors, tokenizer tweaks. Tensor names map through gguf's
`TensorNameMap`; a tensor it cannot map is an error, never silently dropped.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConversionError
from ..convert import ModelConfig


class ArchConverter:
    """How one HF architecture becomes GGUF. Subclasses override only what differs."""

    gguf_arch = ""
    permute_qk = False  # HF rotates halves; llama.cpp's llama graph rotates pairs
    norm_offset = 0.0  # added to every *norm.weight (Gemma stores weight - 1)
    skip_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)
    default_rope_theta = 10_000.0

    def __init__(self, config: ModelConfig):
        import gguf

        self.config = config
        arch_enum = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[self.gguf_arch]
        self._names = gguf.get_tensor_name_map(arch_enum, config.n_layers)

    def add_hparams(self, writer) -> None:
        c = self.config
        writer.add_block_count(c.n_layers)
        writer.add_context_length(int(c.get("max_position_embeddings", default=4096)))
        writer.add_embedding_length(c.hidden)
        writer.add_feed_forward_length(c.n_ff)
        writer.add_head_count(c.n_head)
        writer.add_head_count_kv(c.n_kv_head)
        writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", default=1e-6)))
        writer.add_rope_freq_base(float(c.rope().get("rope_theta", self.default_rope_theta)))
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)
        writer.add_rope_dimension_count(self.rope_dimensions())
        writer.add_vocab_size(c.vocab_size)
        self.add_rope_scaling(writer)

    def rope_dimensions(self) -> int:
        return self.config.head_dim

    def add_rope_scaling(self, writer) -> None:
        import gguf

        rope = self.config.rope()
        kind, factor = rope.get("rope_type"), rope.get("factor")
        if kind in (None, "default", "llama3") or factor is None:
            return  # llama3 scaling travels as the rope_freqs tensor (see arch/llama.py)
        if kind == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(factor))
        elif kind == "yarn":
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(factor))
            writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        else:
            raise ConversionError(f"RoPE scaling {kind!r} is not supported for {self.config.architecture}")

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF tensor name, or None for tensors llama.cpp does not use."""
        if hf_name.endswith(self.skip_suffixes):
            return None
        name = self._names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConversionError(f"cannot map tensor {hf_name!r} of {self.config.architecture} to GGUF",
                                  hint="the checkpoint has layers this converter does not know")
        return name

    def needs_transform(self, name: str) -> bool:
        if self.permute_qk and name.endswith(("attn_q.weight", "attn_k.weight")):
            return True
        return bool(self.norm_offset) and name.endswith("norm.weight")

    def transform(self, name: str, data):
        """float32 array in HF layout -> float32 array in llama.cpp layout."""
        if self.permute_qk and name.endswith("attn_q.weight"):
            data = rope_pairs_from_halves(data, self.config.n_head)
        elif self.permute_qk and name.endswith("attn_k.weight"):
            data = rope_pairs_from_halves(data, self.config.n_kv_head)
        if self.norm_offset and name.endswith("norm.weight"):
            data = data + self.norm_offset
        return data

    def expected_shape(self, name: str) -> tuple[int, ...] | None:
        c = self.config
        q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
        base = name.split(".")[2] if name.startswith("blk.") else name.rsplit(".", 1)[0]
        weight = name.endswith(".weight")
        table = {
            "token_embd": (c.vocab_size, c.hidden), "output": (c.vocab_size, c.hidden),
            "output_norm": (c.hidden,), "attn_norm": (c.hidden,), "ffn_norm": (c.hidden,),
            "attn_q": (q, c.hidden) if weight else (q,), "attn_k": (kv, c.hidden) if weight else (kv,),
            "attn_v": (kv, c.hidden) if weight else (kv,), "attn_output": (c.hidden, q),
            "ffn_gate": (c.n_ff, c.hidden), "ffn_up": (c.n_ff, c.hidden), "ffn_down": (c.hidden, c.n_ff),
            "attn_q_norm": (c.head_dim,), "attn_k_norm": (c.head_dim,),
        }
        return table.get(base)

    def extra_tensors(self) -> list[tuple[str, Any]]:
        """Tensors computed from the config (RoPE factor tables), as float32 arrays."""
        return []

    def adjust_vocabulary(self, vocab) -> None:
        """Per-architecture tokenizer tweaks (e.g. Gemma never prepends a space)."""

    def gguf_model_name(self, vocab, requested: str) -> str:
        """The `general.name` to write: llama.cpp keys a few tokenizer rules on it (see arch/phi3.py)."""
        return requested


def rope_pairs_from_halves(weight, n_head: int):
    """Reorder Q/K rows so pair-wise RoPE (llama.cpp) equals HF's rotate-half RoPE."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))
