"""What llama.cpp would abort on, refused from the GGUF header before it sees the file.

llama.cpp returns an error for most damaged files, but some values it only asserts on
(GGML_ASSERT: the whole process aborts) and some vocabularies make it throw where nothing
catches the exception. Each rule below was found by fuzzing the embedded model's header against
llama-cpp-python 0.3.36 (`tests/integration/test_fuzz_gguf.py`) and names the assertion it
stands in for. The same checks keep hearth's own planner on sane numbers: a block count of
2**31 would otherwise have it build lists of two billion layers.

- `check_metadata` (every header read, cheap): hyper-parameter types and ranges, the mixture-of-
  experts and RoPE settings llama.cpp asserts on, finite floats, non-negative norm epsilons.
- `check_vocabulary` (before a model is loaded; reads the token list): a tokenizer exists, no
  token appears twice, a SentencePiece vocabulary has its byte-fallback tokens.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import BadModelFileError
from .gguf_file import LazyArray

# llama.cpp (as built into llama-cpp-python 0.3.36) limits, from its asserts in load_hparams.
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # anything else: GGML_ASSERT
NO_TOKENIZER = ("none", "no_vocab")  # llama.cpp loads these, then aborts on the first tokenize

# `{arch}.KEY`: the largest plausible value. Bounds are far above any real model's and keep the
# planner's arithmetic (lists per layer, bytes per cell) finite; llama.cpp reads all as uint32.
_HYPERPARAMETER_LIMITS: dict[str, int] = {
    "block_count": LLAMA_MAX_LAYERS,
    "context_length": 2**32 - 1,
    "embedding_length": 1 << 20,
    "feed_forward_length": 1 << 22,
    "attention.head_count": 1 << 14,
    "attention.head_count_kv": 1 << 14,
    "attention.key_length": 1 << 16,
    "attention.value_length": 1 << 16,
    "attention.sliding_window": 2**32 - 1,
    "vocab_size": 1 << 24,
    "expert_count": LLAMA_MAX_EXPERTS,
    "expert_used_count": LLAMA_MAX_EXPERTS,
    "expert_group_count": LLAMA_MAX_EXPERTS,
    "expert_group_used_count": LLAMA_MAX_EXPERTS,
    "nextn_predict_layers": LLAMA_MAX_LAYERS,
}
# Keys that may hold one number per layer instead of one number.
_PER_LAYER = {"feed_forward_length", "attention.head_count", "attention.head_count_kv", "expert_used_count"}
_HINT = "download or convert it again"


def _bad(info, key: str, value: Any, why: str) -> BadModelFileError:
    if isinstance(value, (list, LazyArray)):
        shown = f"an array of {len(value) if isinstance(value, list) else value.count:,} items"
    else:
        shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BadModelFileError(f"{info.path} is corrupted: {key} is {shown}: {why}", hint=_HINT)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_metadata(info) -> None:
    """Refuse (BadModelFileError naming the key) a header llama.cpp or the planner cannot take."""
    for key, value in info.metadata.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(info, key, value, "not a finite number")
        if isinstance(value, float) and value < 0 and key.endswith(("epsilon", "_eps")):
            raise _bad(info, key, value, "a norm epsilon must not be negative")
    _check_counts(info)
    _check_layers_and_experts(info)
    rope_scaling = info.arch_value("rope.scaling.type")
    if rope_scaling is not None and rope_scaling not in ROPE_SCALING_TYPES:
        raise _bad(info, f"{info.architecture}.rope.scaling.type", rope_scaling,
                   f"llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}")


def _check_counts(info) -> None:
    for name, limit in _HYPERPARAMETER_LIMITS.items():
        value = info.arch_value(name)
        if value is None:
            continue
        key = f"{info.architecture}.{name}"
        values = value if isinstance(value, list) and name in _PER_LAYER else [value]
        if not values or not all(_is_count(v) for v in values):
            per_layer = " (or one per layer)" if name in _PER_LAYER else ""
            raise _bad(info, key, value, f"not a whole number{per_layer}")
        if any(not 0 <= v <= limit for v in values):
            raise _bad(info, key, value, f"outside 0..{limit:,}")


def _check_layers_and_experts(info) -> None:
    """llama.cpp's GGML_ASSERTs on layer and expert counts (llama-model.cpp, load_hparams)."""
    arch = info.architecture
    layers = info.arch_value("block_count")
    if layers is not None and layers < 1:
        raise _bad(info, f"{arch}.block_count", layers, f"llama.cpp takes 1..{LLAMA_MAX_LAYERS} layers")
    nextn = info.arch_value("nextn_predict_layers", 0)
    if layers is not None and nextn > layers:
        raise _bad(info, f"{arch}.nextn_predict_layers", nextn, f"more than the {layers} layers")
    experts = info.arch_value("expert_count", 0)
    used_value = info.arch_value("expert_used_count", 0)
    used = max(used_value) if isinstance(used_value, list) else used_value
    groups = info.arch_value("expert_group_count", 0)
    groups_used = info.arch_value("expert_group_used_count", 0)
    if used > experts:
        raise _bad(info, f"{arch}.expert_used_count", used_value, f"more than the {experts} experts")
    if experts and not used:
        raise _bad(info, f"{arch}.expert_used_count", used_value, f"0 with {experts} experts")
    if not experts and groups:
        raise _bad(info, f"{arch}.expert_group_count", groups, "expert groups without experts")
    if experts and groups >= experts:
        raise _bad(info, f"{arch}.expert_group_count", groups, f"not fewer than the {experts} experts")
    if groups > 1 and (experts % groups or not 0 < groups_used < groups):
        raise _bad(info, f"{arch}.expert_group_count", groups,
                   f"with {experts} experts and {groups_used} groups used, llama.cpp cannot split them")


def check_vocabulary(info) -> None:
    """Refuse a vocabulary llama.cpp would abort on once it tokenizes (call before loading)."""
    model = info.metadata.get("tokenizer.ggml.model")
    if model in NO_TOKENIZER:
        raise BadModelFileError(f"{info.path} has no tokenizer (tokenizer.ggml.model is {model!r}): "
                                "hearth cannot run it", hint="use a GGUF converted with its tokenizer")
    if "tokenizer.ggml.tokens" not in info.metadata:
        return  # llama.cpp refuses the file itself, with an error rather than an abort
    tokens = info.read_raw_strings("tokenizer.ggml.tokens")
    if tokens is None:
        raise _bad(info, "tokenizer.ggml.tokens", info.metadata["tokenizer.ggml.tokens"], "not a list of strings")
    index: dict[bytes, int] = {}
    for i, token in enumerate(tokens):
        first = index.setdefault(token, i)
        if first != i:  # llama.cpp: GGML_ASSERT(id_to_token.size() == token_to_id.size())
            raise BadModelFileError(
                f"{info.path} is corrupted: tokenizer.ggml.tokens has token #{i} equal to token #{first} "
                f"({token[:40]!r})", hint=_HINT)
    if model == "llama":
        _check_byte_fallback(info, index)


def _check_byte_fallback(info, index: dict[bytes, int]) -> None:
    """A SentencePiece vocabulary spells text it has no token for as byte tokens `<0xXX>`.

    llama.cpp looks each byte up with `unordered_map::at`: a missing one throws through its C
    API and ends the process (at load for the newline, later for any other byte).
    """
    for byte in range(256):
        if f"<0x{byte:02X}>".encode() not in index and bytes([byte]) not in index:
            raise BadModelFileError(
                f"{info.path} is corrupted: its SentencePiece vocabulary has no token for byte "
                f"<0x{byte:02X}>, which llama.cpp needs to tokenize text", hint=_HINT)
