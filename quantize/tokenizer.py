"""Tokenizer files -> the GGUF `tokenizer.*` keys llama.cpp reads.

Two families:
- byte-level BPE (GPT-2 style: Llama 3, Qwen2/3, SmolLM, Phi-4-mini) from tokenizer.json: vocabulary,
  merges, and the pre-tokenizer, named the way llama.cpp knows it (`tokenizer.ggml.pre`). The
  name is recognised from the pre-tokenizer's own description (its split regex), not by hashing
  sample encodings, so a checkpoint whose tokenizer behaves like a known one converts.
- SentencePiece style (Llama 2, Mistral, Gemma, Phi-3) from tokenizer.model (read by the small
  protobuf reader below, no sentencepiece/protobuf dependency) or, lacking it, from a
  byte-fallback BPE tokenizer.json, with scores recovered from the merge order.

Special tokens, add-BOS/EOS behaviour and the chat template come from tokenizer_config.json,
tokenizer.json's post-processor and chat_template.jinja, in that order, then config.json.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConversionError

# GGUF token types (the same numbers as SentencePiece's piece types).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Split regexes as tokenizer.json writes them -> llama.cpp pre-tokenizer names.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k (GPT-4o), also Phi-4-mini's: words split at case changes, contractions glued on, "/" kept
# with trailing punctuation. llama.cpp's "gpt-4o" pre-tokenizer implements this regex.
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEX_PRE = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2", _GPT4O_SPLIT: "gpt-4o"}
KNOWN_PRE = ("gpt-2 (ByteLevel)", "smollm (Digits + ByteLevel)", "llama-bpe (Llama 3 split)", "qwen2 (Qwen2 split)",
             "gpt-4o (GPT-4o / Phi-4-mini split)")
SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


@dataclass
class Vocabulary:
    model: str  # "gpt2" (byte-level BPE) | "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int]
    pre: str = "default"
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def load_vocabulary(folder: Path, config) -> Vocabulary:
    """Build the vocabulary for a model folder, padded to config.json's vocab_size."""
    tok_json = _read_json(folder / "tokenizer.json")
    tok_config = _read_json(folder / "tokenizer_config.json") or {}
    model = (tok_json or {}).get("model", {})
    if tok_json and model.get("type") == "BPE" and not model.get("byte_fallback"):
        vocab = byte_level_bpe(tok_json)
    elif (folder / "tokenizer.model").is_file():
        vocab = sentencepiece_from_model(folder / "tokenizer.model", tok_json)
    elif tok_json and model.get("type") == "BPE":
        vocab = sentencepiece_from_json(tok_json)
    else:
        raise ConversionError(f"{folder} has no tokenizer hearth can read",
                              hint="expected tokenizer.json (BPE) or tokenizer.model (SentencePiece)")
    _overlay_added_tokens(vocab, tok_json, tok_config)
    _pad(vocab, config.vocab_size)
    vocab.special_ids = special_token_ids(vocab, tok_config, config.raw)
    vocab.add_bos, vocab.add_eos = add_special_flags(tok_json, tok_config, vocab)
    vocab.chat_template = chat_template(folder, tok_config)
    return vocab


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path.name} is not valid JSON: {exc}") from None


def looks_special(text: str) -> bool:
    """Added tokens some repos forget to mark special (`<|im_start|>`, `<unused12>`, `<pad>`)."""
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>") \
        or (text.startswith("<unused") and text.endswith(">"))


# --------------------------------------------------------------------------------------------
# byte-level BPE


def byte_level_bpe(tok_json: dict) -> Vocabulary:
    model = tok_json["model"]
    id_to_token = {i: t for t, i in model["vocab"].items()}
    size = max(id_to_token) + 1 if id_to_token else 0
    tokens = [id_to_token.get(i, f"[PAD{i}]") for i in range(size)]
    types = [NORMAL if i in id_to_token else UNUSED for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise ConversionError("tokenizer.json has a BPE vocabulary without merges; llama.cpp cannot load that")
    return Vocabulary("gpt2", tokens, types, pre=pre_tokenizer_name(tok_json.get("pre_tokenizer")), merges=merges)


def _flatten(component: dict | None, key: str) -> list[dict]:
    if not component:
        return []
    if component.get("type") == "Sequence":
        return [c for part in component.get(key, []) for c in _flatten(part, key)]
    return [component]


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """The llama.cpp pre-tokenizer equivalent to this tokenizer.json pre-tokenizer."""
    parts = _flatten(pre_tokenizer, "pretokenizers")
    kinds = [p.get("type") for p in parts]
    byte_level = parts[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level.get("use_regex", True):
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
            regex = (parts[0].get("pattern") or {}).get("Regex")
            if regex in SPLIT_REGEX_PRE and parts[0].get("behavior") == "Isolated":
                return SPLIT_REGEX_PRE[regex]
    raise ConversionError(
        f"unrecognised BPE pre-tokenizer: {json.dumps(pre_tokenizer)[:160]}",
        hint="known: " + ", ".join(KNOWN_PRE),
    )


# --------------------------------------------------------------------------------------------
# SentencePiece


@dataclass(frozen=True)
class SentencePieceModel:
    pieces: list[tuple[str, float, int]]  # (piece, score, type)
    add_dummy_prefix: bool


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def read_sentencepiece_model(data: bytes) -> SentencePieceModel:
    """Parse the parts of sentencepiece's ModelProto that llama.cpp needs."""
    pieces, add_dummy_prefix = [], True
    for number, _, value in _fields(data):
        if number == 1:  # SentencePiece {1: piece, 2: score, 3: type}
            piece, score, kind = "", 0.0, NORMAL
            for n, _, v in _fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            pieces.append((piece, score, kind))
        elif number == 3:  # NormalizerSpec {3: add_dummy_prefix}
            for n, _, v in _fields(value):
                if n == 3:
                    add_dummy_prefix = bool(v)
    return SentencePieceModel(pieces, add_dummy_prefix)


def sentencepiece_from_model(path: Path, tok_json: dict | None) -> Vocabulary:
    try:
        spm = read_sentencepiece_model(path.read_bytes())
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise ConversionError(f"{path.name} is not a SentencePiece model: {exc}") from None
    if not spm.pieces:
        raise ConversionError(f"{path.name} has no pieces")
    vocab = Vocabulary("llama", [p for p, _, _ in spm.pieces], [k for _, _, k in spm.pieces],
                       scores=[s for _, s, _ in spm.pieces])
    vocab.add_space_prefix = _json_space_prefix(tok_json) if tok_json else spm.add_dummy_prefix
    return vocab


def sentencepiece_from_json(tok_json: dict) -> Vocabulary:
    """A byte-fallback BPE tokenizer.json (converted from SentencePiece): rank merges into scores."""
    model = tok_json["model"]
    id_to_token = {i: t for t, i in model["vocab"].items()}
    size = max(id_to_token) + 1
    tokens = [id_to_token.get(i, f"[PAD{i}]") for i in range(size)]
    scores = [0.0] * size
    ranked: set[str] = set()
    for rank, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merged = left + right
        if merged not in ranked and merged in model["vocab"]:
            ranked.add(merged)
            scores[model["vocab"][merged]] = -float(rank + 1)
    byte_token = re.compile(r"<0x[0-9A-Fa-f]{2}>")
    types = [UNUSED if i not in id_to_token else BYTE if byte_token.fullmatch(tokens[i]) else NORMAL
             for i in range(size)]
    if model.get("unk_token") in model["vocab"]:
        types[model["vocab"][model["unk_token"]]] = UNKNOWN
    vocab = Vocabulary("llama", tokens, types, scores=scores)
    vocab.add_space_prefix = _json_space_prefix(tok_json)
    return vocab


def _json_space_prefix(tok_json: dict) -> bool:
    """Does the HF tokenizer put `▁` before the first word (SentencePiece's dummy prefix)?"""
    for part in _flatten(tok_json.get("pre_tokenizer"), "pretokenizers"):
        if part.get("type") == "Metaspace":
            return part.get("prepend_scheme", "always") != "never" and part.get("add_prefix_space", True)
    for part in _flatten(tok_json.get("normalizer"), "normalizers"):
        if part.get("type") == "Prepend":
            return True
    return False


# --------------------------------------------------------------------------------------------
# added and special tokens


def _overlay_added_tokens(vocab: Vocabulary, tok_json: dict | None, tok_config: dict) -> None:
    added = {int(t["id"]): t for t in (tok_json or {}).get("added_tokens", [])}
    for key, entry in (tok_config.get("added_tokens_decoder") or {}).items():
        added.setdefault(int(key), {"content": entry.get("content"), "special": entry.get("special")})
    for token_id in sorted(added):
        entry = added[token_id]
        text = entry["content"]
        _pad(vocab, token_id + 1)
        special = entry.get("special") or looks_special(text)
        if vocab.model == "llama" and not special:
            text = text.replace("\u2581", " ")  # llama.cpp matches user-defined tokens as plain text
        vocab.tokens[token_id] = text
        vocab.token_types[token_id] = CONTROL if special else USER_DEFINED
        if vocab.scores is not None:
            vocab.scores[token_id] = -1000.0


def _pad(vocab: Vocabulary, size: int) -> None:
    for i in range(len(vocab.tokens), size):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.token_types.append(UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-10000.0)


def _content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def special_token_ids(vocab: Vocabulary, tok_config: dict, config: dict) -> dict[str, int]:
    index = {text: i for i, text in enumerate(vocab.tokens) if vocab.token_types[i] != UNUSED}
    ids: dict[str, int] = {}
    for kind in SPECIAL_KINDS:
        text = _content(tok_config.get(f"{kind}_token"))
        if text is not None and text in index:
            ids[kind] = index[text]
        elif isinstance(config.get(f"{kind}_token_id"), (int, list)):
            value = config[f"{kind}_token_id"]
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int) and 0 <= value < len(vocab.tokens):
                ids[kind] = value
    return ids


def add_special_flags(tok_json: dict | None, tok_config: dict, vocab: Vocabulary) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS, as the HF tokenizer does it."""
    add_bos, add_eos = tok_config.get("add_bos_token"), tok_config.get("add_eos_token")
    template = None
    for part in _flatten((tok_json or {}).get("post_processor"), "processors"):
        if part.get("type") == "TemplateProcessing":
            template = part.get("single", [])
    if template is not None:
        if add_bos is None:
            add_bos = bool(template) and "SpecialToken" in template[0]
        if add_eos is None:
            add_eos = bool(template) and "SpecialToken" in template[-1]
    if add_bos is None:  # no post-processor: SentencePiece models traditionally start with BOS
        add_bos = vocab.model == "llama" and tok_json is None
    return bool(add_bos), bool(add_eos)


def chat_template(folder: Path, tok_config: dict) -> str | None:
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # named templates: keep the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not template and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if not template and (folder / "chat_template.json").is_file():
        template = (_read_json(folder / "chat_template.json") or {}).get("chat_template")
    return template or None


# --------------------------------------------------------------------------------------------
# writing


def write_vocabulary(writer, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special_ids.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    if vocab.add_bos is not None:
        writer.add_add_bos_token(vocab.add_bos)
    if vocab.add_eos is not None:
        writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
