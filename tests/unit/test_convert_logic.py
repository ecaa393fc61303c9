"""Pure pieces of convert / quantize / quality / registry, checked with tables of cases."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from hearth.errors import ConversionError, ModelNotFoundError, UsageError  # noqa: E402
from hearth.quantize import registry  # noqa: E402
from hearth.quantize.arch import rope_pairs_from_halves  # noqa: E402
from hearth.quantize.arch.llama import llama3_rope_factors  # noqa: E402
from hearth.quantize.convert import ModelConfig, output_type, tensor_bytes  # noqa: E402
from hearth.quantize.quality import chunk_tokens, score_chunk  # noqa: E402
from hearth.quantize.quantize import check_target, default_output, normalize_type  # noqa: E402
from hearth.quantize.tokenizer import (CONTROL, NORMAL, Vocabulary, add_special_flags,  # noqa: E402
                                       read_sentencepiece_model, sentencepiece_from_json)


@pytest.mark.parametrize("outtype,shape,expected", [
    ("f16", (64,), "F32"), ("f16", (64, 64), "F16"), ("bf16", (8, 64), "BF16"), ("f32", (8, 64), "F32"),
    ("q8_0", (8, 64), "Q8_0"), ("q8_0", (8, 48), "F16"),  # rows not a multiple of 32: no Q8_0 blocks
])
def test_output_type(outtype, shape, expected):
    assert output_type(outtype, shape) == expected


def test_tensor_bytes():
    assert tensor_bytes("Q8_0", (4, 64)) == 4 * 2 * 34
    assert tensor_bytes("F16", (3, 5)) == 30


def test_rope_permutation_turns_rotate_half_into_pairs():
    """HF RoPE (rotate halves) on W x == llama.cpp RoPE (rotate pairs) on permuted(W) x."""
    rng = np.random.default_rng(0)
    n_head, head_dim, hidden, pos = 2, 8, 16, 3
    weight, x = rng.standard_normal((n_head * head_dim, hidden)), rng.standard_normal(hidden)
    theta = pos / 10000 ** (np.arange(0, head_dim, 2) / head_dim)
    cos, sin = np.cos(theta), np.sin(theta)

    def halves(v):
        a, b = v[: head_dim // 2], v[head_dim // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin])

    def pairs(v):
        out = v.copy()
        out[0::2], out[1::2] = v[0::2] * cos - v[1::2] * sin, v[1::2] * cos + v[0::2] * sin
        return out

    hf = np.concatenate([halves(h) for h in (weight @ x).reshape(n_head, head_dim)])
    ours = np.concatenate([pairs(h) for h in (rope_pairs_from_halves(weight, n_head) @ x).reshape(n_head, head_dim)])
    # the permutation also reorders the output dims; undo it on HF's side to compare
    assert np.allclose(rope_pairs_from_halves(hf[:, None], n_head)[:, 0], ours)


def test_llama3_rope_factors():
    factors = llama3_rope_factors(128, 500000.0, 8.0, 1.0, 4.0, 8192)
    assert len(factors) == 64 and factors[0] == 1.0 and factors[-1] == 8.0
    assert all(1.0 <= f <= 8.0 for f in factors) and factors == sorted(factors)


@pytest.mark.parametrize("raw,layer_type,theta", [
    ({"rope_theta": 5e5}, "full_attention", 5e5),
    ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "default"}}, "full_attention", 1e4),
    ({"rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}},
     "sliding_attention", 1e4),
])
def test_rope_parameters_v4_and_v5(raw, layer_type, theta):
    assert ModelConfig(raw).rope(layer_type)["rope_theta"] == theta


GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
               r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
               r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@pytest.mark.parametrize("pre_tokenizer,name", [
    ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                            {"type": "ByteLevel", "add_prefix_space": False}]}, "smollm"),
    ({"type": "Sequence", "pretokenizers": [  # as Phi-4-mini-instruct's tokenizer.json has it
        {"type": "Split", "pattern": {"Regex": GPT4O_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}, "gpt-4o"),
])
def test_pre_tokenizer_names(pre_tokenizer, name):
    from hearth.quantize.tokenizer import pre_tokenizer_name

    assert pre_tokenizer_name(pre_tokenizer) == name


def phi3_converter(**config):
    from hearth.quantize.arch.phi3 import Phi3Converter

    base = {"hidden_size": 3072, "num_attention_heads": 24, "num_hidden_layers": 2}  # Phi-4-mini's heads
    return Phi3Converter(ModelConfig({**base, **config}))


@pytest.mark.parametrize("config,dims", [
    ({}, 128),
    ({"partial_rotary_factor": 0.75}, 96),  # transformers 4 config.json
    ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.75}}, 96),  # transformers 5
    ({"hidden_size": 64, "num_attention_heads": 4, "partial_rotary_factor": 0.5}, 8),
])
def test_phi3_rotary_dims(config, dims):
    assert phi3_converter(**config).rope_dimensions() == dims


@pytest.mark.parametrize("factor", [0.0, 0.7, 1.5])  # 0, 11 (odd) and 24 (> head_dim 16) rotary dims
def test_phi3_rotary_dims_llama_cpp_cannot_run_are_refused(factor):
    with pytest.raises(ConversionError, match="rotary dims"):
        phi3_converter(hidden_size=64, num_attention_heads=4, partial_rotary_factor=factor).rope_dimensions()


SPM_PHI3_TOKENS = ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|user|>"]
BPE_PHI4_TOKENS = ["<|endoftext|>", "<|user|>"]  # no <unk>, <s>, </s>


@pytest.mark.parametrize("requested,tokens,written", [
    ("tiny-phi3", BPE_PHI4_TOKENS, "tiny-phi 3"),
    ("Phi-3.5-mini-ft", BPE_PHI4_TOKENS, "Phi 3.5-mini-ft"),
    ("PHI3-a-phi-3-b", BPE_PHI4_TOKENS, "PHI 3-a-phi 3-b"),
    ("Phi-4-mini-instruct", BPE_PHI4_TOKENS, "Phi-4-mini-instruct"),
    ("Phi-3-mini-4k", SPM_PHI3_TOKENS, "Phi-3-mini-4k"),  # llama.cpp's rule is Phi-3's own: kept
])
def test_phi3_gguf_name_avoids_llama_cpp_rule_the_vocabulary_cannot_take(requested, tokens, written):
    vocab = Vocabulary("gpt2", tokens, [CONTROL] * len(tokens))
    assert phi3_converter().gguf_model_name(vocab, requested) == written


def test_byte_level_with_prefix_space_is_refused():
    from hearth.quantize.tokenizer import pre_tokenizer_name

    with pytest.raises(ConversionError, match="unrecognised"):
        pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": True, "use_regex": True})


@pytest.mark.parametrize("post,config,expected", [
    (None, {}, (False, False)),
    ({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]}, {}, (True, False)),
    ({"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "</s>"}}]}]}, {}, (True, True)),
    ({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]},
     {"add_bos_token": False}, (False, False)),
])
def test_add_special_flags(post, config, expected):
    vocab = Vocabulary("gpt2", [], [])
    assert add_special_flags({"post_processor": post}, config, vocab) == expected


def test_sentencepiece_reader_matches_the_library(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    text = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs"] * 30
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf, vocab_size=300, model_type="bpe",
                                   byte_fallback=True, minloglevel=2, user_defined_symbols=["<tool>"])
    ours = read_sentencepiece_model(buf.getvalue())
    proc = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert [p for p, _, _ in ours.pieces] == [proc.id_to_piece(i) for i in range(proc.get_piece_size())]
    assert [s for _, s, _ in ours.pieces] == pytest.approx([proc.get_score(i) for i in range(proc.get_piece_size())])
    kinds = {k for _, _, k in ours.pieces}
    assert kinds == {1, 2, 3, 4, 6}  # normal, unknown, control, user-defined, byte
    assert ours.add_dummy_prefix is True


def test_scores_from_merges_follow_merge_order():
    tok = {"model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                     "vocab": {"<unk>": 0, "<0x0A>": 1, "a": 2, "b": 3, "ab": 4, "abb": 5, "bb": 6},
                     "merges": ["a b", "b b", "ab b"]},
           "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "first"}}
    vocab = sentencepiece_from_json(tok)
    assert vocab.scores[4] > vocab.scores[6] > vocab.scores[5]
    assert vocab.token_types[:3] == [2, 6, NORMAL] and vocab.add_space_prefix is True


@pytest.mark.parametrize("name,ok", [("q4_k_m", "Q4_K_M"), (" iq4_xs ", "IQ4_XS"), ("F16", "F16")])
def test_normalize_type(name, ok):
    assert normalize_type(name) == ok


def test_normalize_type_lists_valid_types():
    with pytest.raises(UsageError) as refused:
        normalize_type("Q4_K_X")
    assert "Q4_K_M" in refused.value.hint and "IQ4_XS" in refused.value.hint


@pytest.mark.parametrize("have,want,requantize", [
    ("F16", "Q4_K_M", False), ("BF16", "Q8_0", False), ("F32", "F16", False), ("Q8_0", "Q4_K_M", True),
    ("Q6_K", "Q4_0", True),
])
def test_check_target_allows_going_down(have, want, requantize):
    assert check_target(have, want) is requantize


@pytest.mark.parametrize("have,want", [("Q4_1", "Q8_0"), ("Q4_K_M", "Q4_K_M"), ("Q4_0", "F16"), ("IQ4_XS", "Q4_0")])
def test_check_target_refuses_going_up(have, want):
    with pytest.raises(ConversionError, match=f"already {have}"):
        check_target(have, want)


@pytest.mark.parametrize("src,quant,out", [
    ("m/model-F16.gguf", "Q4_K_M", "m/model-Q4_K_M.gguf"), ("m/model.f32.gguf", "Q8_0", "m/model-Q8_0.gguf"),
    ("m/model.gguf", "Q6_K", "m/model-Q6_K.gguf"), ("m/x-Q8_0.gguf", "Q4_0", "m/x-Q4_0.gguf"),
])
def test_default_output(src, quant, out):
    assert default_output(Path(src), quant) == Path(out)


def test_chunk_tokens():
    tokens = list(range(10))
    assert chunk_tokens(tokens, 4, None) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert chunk_tokens(tokens, 4, 99) == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]
    assert chunk_tokens(list(range(20)), 64, 1) == [[1] + list(range(20))]  # shorter than a context
    assert chunk_tokens([1, 2], 64, None) == []


def test_score_chunk_hand_made():
    ref = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    cand = np.log(np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]]))
    scores = score_chunk(ref, cand, np.array([0, 2]))
    expected = [0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.3),
                0.1 * math.log(0.1 / 0.5) + 0.1 * math.log(0.1 / 0.2) + 0.8 * math.log(0.8 / 0.3)]
    assert scores.kld == pytest.approx(expected)
    assert scores.nll_reference == pytest.approx([-math.log(0.7), -math.log(0.8)])
    assert list(scores.same_top1) == [True, False]
    assert score_chunk(ref, ref, np.array([0, 2])).kld == pytest.approx([0, 0], abs=1e-12)


def test_registry_round_trip(tmp_path):
    from hearth.references import from_registry

    first = tmp_path / "a-F16.gguf"
    second = tmp_path / "a-Q4_K_M.gguf"
    for path in (first, second):
        path.write_bytes(b"GGUF")
    assert from_registry("a") is None
    registry.register("a", "F16", first, "org/a")
    registry.register("a", "q4_k_m", second, "org/a")
    assert registry.lookup("a").quant == "Q4_K_M"  # newest
    assert registry.lookup("A:f16").path == str(first.resolve())
    assert registry.most_precise("a").quant == "F16"
    resolved = from_registry("a:Q4_K_M")
    assert resolved.path == second.resolve() and resolved.source == "registry"
    assert from_registry("b") is None
    second.unlink()
    with pytest.raises(ModelNotFoundError, match="file is gone"):
        from_registry("a:Q4_K_M")


def test_runtime_models_finds_registered_names(tmp_path):
    from hearth.references import resolve_model

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    registry.register("my-model", "Q8_0", path, "here")
    assert resolve_model("my-model").path == path.resolve()
    assert ":" not in registry.safe_name("a/b:c")


def test_special_token_and_control_types():
    from hearth.quantize.tokenizer import special_token_ids

    vocab = Vocabulary("gpt2", ["<|endoftext|>", "a", "<|im_end|>"], [CONTROL, NORMAL, CONTROL])
    ids = special_token_ids(vocab, {"eos_token": {"content": "<|im_end|>"}, "bos_token": None},
                            {"bos_token_id": 0, "eos_token_id": [1, 2]})
    assert ids == {"eos": 2, "bos": 0}
