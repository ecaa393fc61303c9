"""Conversion parity: tiny random checkpoints of every supported architecture, built here with
transformers (CPU torch), converted to F32 GGUF, run through llama.cpp and through transformers
on the same token ids.

Bounds held: top-1 agreement 100%, and max |logit difference| <= 1e-3 x max |HF logit|
(measured: ~1e-6 relative for most archs; ~3e-4 for Gemma 3, whose GELU ggml evaluates from an
F16 table). Token ids of a multilingual string (emoji, code, whitespace runs) must equal the HF
tokenizer's exactly, with and without special tokens.

Tokenizers are real: the byte-level BPE vocabulary of SmolLM2 (rebuilt by transformers from the
embedded GGUF) under each pre-tokenizer llama.cpp knows, SentencePiece models trained here
in Llama-2 and Gemma styles, and a byte-level BPE trained here in Phi-4-mini's shape (GPT-4o
split, tokenizer_class GPT2Tokenizer, no tokenizer.model).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
hf_tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("google.protobuf", reason="transformers needs protobuf to read tokenizer.model")

from hearth.errors import ConversionError  # noqa: E402
from hearth.quantize.convert import convert_checkpoint  # noqa: E402
from hearth.runtime.gguf_file import read_gguf  # noqa: E402
from hearth.runtime.scoring import ScoringModel  # noqa: E402

pytestmark = pytest.mark.slow  # end to end through real llama.cpp: seconds per test

MULTILINGUAL = ("Hello  world! Ça va? Grüße aus München — 日本語のテキスト, Русский текст, عربي 🦙🚀👍🏽\n"
                "\tdef f(x):\n        return x ** 2  # comment 12345\n\n\n   trailing   spaces   ")
RELATIVE_BOUND = 1e-3
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
               r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
               r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")  # Phi-4-mini's, GPT-4o's
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


# ---------------------------------------------------------------------------------------------
# builders (also used by test_quantize.py)


def smollm_tokenizer(default_model_path: Path, out: Path) -> Path:
    """SmolLM2's byte-level BPE tokenizer, rebuilt by transformers from the embedded GGUF."""
    if not (out / "tokenizer.json").is_file():
        tok = transformers.AutoTokenizer.from_pretrained(str(default_model_path.parent),
                                                         gguf_file=default_model_path.name)
        tok.save_pretrained(out)
    return out


def with_pre_tokenizer(src: Path, out: Path, pre: str) -> Path:
    """The same vocabulary under another pre-tokenizer (as Llama 3 / Qwen2 / SmolLM ship it)."""
    shutil.copytree(src, out, dirs_exist_ok=True)
    data = json.loads((src / "tokenizer.json").read_text())
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    split = lambda rx: {"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False}  # noqa: E731
    data["pre_tokenizer"] = {
        "gpt-2": {**byte_level, "use_regex": True},
        "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                         {**byte_level, "use_regex": True}]},
        "llama-bpe": {"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level]},
        "qwen2": {"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level]},
        "gpt-4o": {"type": "Sequence", "pretokenizers": [split(GPT4O_SPLIT), byte_level]},
    }[pre]
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    return out


def _training_text() -> list[str]:
    source = Path(transformers.__file__).parent / "models" / "llama" / "modeling_llama.py"
    lines = source.read_text().splitlines()
    lines += ["Hello world, this is a test. Bonjour le monde, ça va très bien. Grüße aus München."] * 20
    return lines


def sentencepiece_tokenizer(out: Path, style: str) -> Path:
    """A small byte-fallback BPE SentencePiece model, in Llama-2, Phi-3 or Gemma style."""
    if (out / "tokenizer.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    ids = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    extra: dict = {}
    if style == "gemma":
        ids = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3)
        extra = dict(user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], add_dummy_prefix=False)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text()), model_writer=buf, vocab_size=600, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2, **ids, **extra)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    cls = "GemmaTokenizer" if style == "gemma" else "LlamaTokenizer"
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls}))
    tok = transformers.AutoTokenizer.from_pretrained(out)
    if style == "phi3":
        tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>"]})
    tok.save_pretrained(out)
    return out


PHI4_SPECIAL = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def gpt4o_bpe_tokenizer(out: Path) -> Path:
    """A small byte-level BPE in Phi-4-mini's shape: tokenizer.json with the GPT-4o split, a
    GPT2Tokenizer class, <|endoftext|> as bos/eos/unk/pad, no BOS added, no tokenizer.model."""
    if (out / "tokenizer.json").is_file():
        return out
    pre, ByteLevel = hf_tokenizers.pre_tokenizers, hf_tokenizers.pre_tokenizers.ByteLevel
    tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE())
    tok.pre_tokenizer = pre.Sequence([pre.Split(hf_tokenizers.Regex(GPT4O_SPLIT), behavior="isolated"),
                                      ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = hf_tokenizers.decoders.ByteLevel()
    trainer = hf_tokenizers.trainers.BpeTrainer(vocab_size=800, initial_alphabet=ByteLevel.alphabet(),
                                                special_tokens=PHI4_SPECIAL[:1], show_progress=False)
    tok.train_from_iterator(_training_text(), trainer)
    tok.add_special_tokens(PHI4_SPECIAL[1:])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    special = {f"{kind}_token": "<|endoftext|>" for kind in ("bos", "eos", "unk", "pad")}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, **special}))
    return out


def hf_tokenizer(folder: Path):
    """transformers' tokenizer for a folder, with tokenizer.json's pipeline intact.

    transformers 5 builds a GPT2Tokenizer from the vocabulary and merges alone, under GPT-2's
    own pre-tokenizer, dropping tokenizer.json's split (Phi-4-mini's GPT-4o regex); the model
    was trained with tokenizer.json's pipeline, which TokenizersBackend loads whole.
    """
    if tokenizer_class(folder) == "GPT2Tokenizer":
        return transformers.TokenizersBackend.from_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)


def tokenizer_class(folder: Path) -> str | None:
    return json.loads((folder / "tokenizer_config.json").read_text()).get("tokenizer_class")


def model_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2, ff: int = 128, **extra):
    common = dict(hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    common.update(extra)
    head_dim = hidden // 4
    T = transformers
    return {
        "llama": lambda: T.LlamaConfig(**common),
        "mistral": lambda: T.MistralConfig(**common),
        "qwen2": lambda: T.Qwen2Config(**common),
        "qwen3": lambda: T.Qwen3Config(**common, head_dim=head_dim),
        "gemma3": lambda: T.Gemma3TextConfig(**common, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                                               sliding_window=8,
                                               layer_types=(["sliding_attention", "full_attention"] * layers)[:layers]),
        "phi3": lambda: T.Phi3Config(**common),
        "phi4-mini": lambda: T.Phi3Config(**{"partial_rotary_factor": 0.75, "tie_word_embeddings": True, **common}),
    }[arch]()


def build_checkpoint(arch: str, tokenizer_dir: Path, out: Path, seed: int = 0, **sizes):
    """Random weights (norms perturbed too, so the Gemma +1 offset matters), saved as safetensors.

    A Phi-4-mini-style model has more embedding rows than tokens (padded to a multiple of 64),
    and its tokenizer files are copied as they are (see hf_tokenizer).
    """
    tok = hf_tokenizer(tokenizer_dir)
    vocab_size = -(-len(tok) // 64) * 64 if arch == "phi4-mini" else len(tok)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(model_config(arch, vocab_size, **sizes)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(out)
    if tokenizer_class(tokenizer_dir) == "GPT2Tokenizer":  # saving would rename the class
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_dir / name, out / name)
    else:
        tok.save_pretrained(out)
    for name in ("tokenizer.model",):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out / name)
    return model, tok


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, default_model_path):
    root = tmp_path_factory.mktemp("tokenizers")
    smol = smollm_tokenizer(default_model_path, root / "smollm-gguf")
    smol_config = json.loads((smol / "tokenizer_config.json").read_text())
    smol_config["chat_template"] = CHAT_TEMPLATE
    (smol / "tokenizer_config.json").write_text(json.dumps(smol_config))
    (smol / "chat_template.jinja").unlink(missing_ok=True)
    dirs = {pre: with_pre_tokenizer(smol, root / pre, pre) for pre in BYTE_LEVEL_PRE}
    for style in ("llama", "phi3", "gemma"):
        dirs[f"spm-{style}"] = sentencepiece_tokenizer(root / f"spm-{style}", style)
    dirs["phi4-bpe"] = gpt4o_bpe_tokenizer(root / "phi4-bpe")
    return dirs


BYTE_LEVEL_PRE = ("gpt-2", "smollm", "llama-bpe", "qwen2", "gpt-4o")
ARCH_TOKENIZER = {"llama": "llama-bpe", "mistral": "spm-llama", "qwen2": "qwen2", "qwen3": "qwen2",
                  "gemma3": "spm-gemma", "phi3": "spm-phi3", "phi4-mini": "phi4-bpe"}


@pytest.mark.parametrize("arch", sorted(ARCH_TOKENIZER))
def test_f32_conversion_matches_transformers(arch, tokenizers, tmp_path):
    folder = tmp_path / f"tiny-{arch}"
    model, tok = build_checkpoint(arch, tokenizers[ARCH_TOKENIZER[arch]], folder)
    result = convert_checkpoint(folder, tmp_path / "out.gguf", "f32")
    assert result.architecture == model.config.architectures[0]

    hf_ids = tok(MULTILINGUAL)["input_ids"]
    with ScoringModel(result.path, n_ctx=128) as llama:
        assert llama.tokenize(MULTILINGUAL, add_special=True) == hf_ids
        assert llama.tokenize(MULTILINGUAL, add_special=False) == tok(MULTILINGUAL, add_special_tokens=False)["input_ids"]
        ids = hf_ids[:48]
        ours = llama.logits(ids)
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].float().numpy()
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert np.abs(ours - theirs).max() <= RELATIVE_BOUND * np.abs(theirs).max()


@pytest.mark.parametrize("pre", BYTE_LEVEL_PRE)
def test_byte_level_pre_tokenizers_tokenize_like_transformers(pre, tokenizers, tmp_path):
    folder = tmp_path / "tiny"
    _, tok = build_checkpoint("llama", tokenizers[pre], folder, hidden=32, ff=64, layers=1)
    result = convert_checkpoint(folder, tmp_path / "out.gguf", "f16")
    info = read_gguf(result.path)
    assert info.metadata["tokenizer.ggml.pre"] == pre
    assert info.chat_template == CHAT_TEMPLATE
    assert info.metadata["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    with ScoringModel(result.path, vocab_only=True) as llama:
        for text in (MULTILINGUAL, "3.14159 and 1234567 apples", "<|im_start|>user\nhi<|im_end|>"):
            ours = llama.tokenize(text, add_special=False, parse_special=True)
            assert ours == tok(text, add_special_tokens=False)["input_ids"], text


@pytest.mark.parametrize("outtype,bound", [("f16", 2e-2), ("bf16", 5e-2), ("q8_0", 5e-2)])
def test_other_outtypes_stay_close(outtype, bound, tokenizers, tmp_path):
    folder = tmp_path / "tiny"
    model, tok = build_checkpoint("qwen3", tokenizers["qwen2"], folder)
    result = convert_checkpoint(folder, tmp_path / "out.gguf", outtype)
    kinds = {t.type_name for t in read_gguf(result.path).tensors}
    assert kinds == {"F32", outtype.upper()}  # 1-D tensors stay F32
    ids = tok(MULTILINGUAL)["input_ids"][:32]
    with ScoringModel(result.path, n_ctx=64) as llama:
        ours = llama.logits(ids)
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(ours - theirs).max() <= bound * np.abs(theirs).max()


# RoPE scaling variants: HF applies them in its rotary embedding, llama.cpp from GGUF keys or the
# rope_freqs / rope_factors tensors. Each case is also converted with its scaling stripped, and
# that GGUF must miss the bound: the case really exercises the scaling.
SHORT = [1.0, 1.3, 1.7, 2.2, 2.9, 3.6, 4.4, 5.0]  # per rotary frequency (head_dim 16 -> 8)
ROPE_CASES = {
    "llama3": ("llama", "llama-bpe", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}),
    "linear": ("llama", "llama-bpe", {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}}),
    "longrope": ("phi3", "spm-phi3", {"original_max_position_embeddings": 256, "max_position_embeddings": 1024, "rope_parameters": {
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": SHORT, "long_factor": [f * 2 for f in SHORT],
        "original_max_position_embeddings": 256}}),
    # Phi-4-mini's combination: longrope over 0.75 of head_dim (12 rotary dims -> 6 factors each)
    "longrope-partial": ("phi4-mini", "phi4-bpe", {
        "original_max_position_embeddings": 256, "max_position_embeddings": 1024, "rope_parameters": {
            "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": SHORT[:6],
            "long_factor": [f * 2 for f in SHORT[:6]], "original_max_position_embeddings": 256}}),
}


@pytest.mark.parametrize("case", sorted(ROPE_CASES))
def test_rope_scaling_matches_transformers(case, tokenizers, tmp_path):
    arch, tokenizer, extra = ROPE_CASES[case]
    folder = tmp_path / f"tiny-{case}"
    model, tok = build_checkpoint(arch, tokenizers[tokenizer], folder, **extra)
    result = convert_checkpoint(folder, tmp_path / "out.gguf", "f32")
    ids = tok(MULTILINGUAL)["input_ids"][:48]
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].float().numpy()
    bound = RELATIVE_BOUND * np.abs(theirs).max()
    # n_ctx within the original window: HF and llama.cpp both pick Phi-3's short factors there.
    with ScoringModel(result.path, n_ctx=128) as llama:
        ours = llama.logits(ids)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert np.abs(ours - theirs).max() <= bound

    config = json.loads((folder / "config.json").read_text())
    config.pop("rope_scaling", None)
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config))
    plain = convert_checkpoint(folder, tmp_path / "plain.gguf", "f32")
    with ScoringModel(plain.path, n_ctx=128) as llama:
        unscaled = llama.logits(ids)
    assert np.abs(unscaled - theirs).max() > bound


# Phi-4-mini: partial rotary, tied embeddings, the GPT-4o split, in a folder whose name would make
# llama.cpp apply its Phi-3 tokenizer rule (which needs <unk>, <s>, </s>). Each part is shown to
# matter: with the rotary factor stripped the logits miss the bound, with the tie stripped the
# conversion is refused, with the split stripped the HF tokenizer itself gives other ids.
PHI4_STRINGS = ("self.weight(self) and x.shape[-1] // 2", "HelloWorld DON'T it's 3.14159 and 1234567 apples",
                "a/b//c.py\r\n\n  x", "<|system|>\nBe brief.<|end|>\n<|user|>\nhi <|end|>\n<|assistant|>\n")


def test_phi4_mini_partial_rotary_tie_and_split_are_exercised(tokenizers, tmp_path):
    from hearth.quantize.shards import read_safetensors_header

    folder = tmp_path / "tiny-phi3"
    model, tok = build_checkpoint("phi4-mini", tokenizers["phi4-bpe"], folder)
    assert not (folder / "tokenizer.model").exists()
    assert "lm_head.weight" not in {t.name for t in read_safetensors_header(folder / "model.safetensors")}
    result = convert_checkpoint(folder, tmp_path / "out.gguf", "f32")
    info = read_gguf(result.path)
    assert result.gguf_name == info.metadata["general.name"] == "tiny-phi 3"
    assert (info.metadata["tokenizer.ggml.model"], info.metadata["tokenizer.ggml.pre"]) == ("gpt2", "gpt-4o")
    assert info.metadata["phi3.rope.dimension_count"] == 12  # 0.75 of head_dim 16
    assert "output.weight" not in {t.name for t in info.tensors}

    ids = tok(MULTILINGUAL)["input_ids"][:48]
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].float().numpy()
    bound = RELATIVE_BOUND * np.abs(theirs).max()
    with ScoringModel(result.path, n_ctx=128) as llama:
        for text in PHI4_STRINGS:
            ours_ids = llama.tokenize(text, add_special=False, parse_special=True)
            assert ours_ids == tok(text, add_special_tokens=False)["input_ids"], text
        ours = llama.logits(ids)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert np.abs(ours - theirs).max() <= bound

    gpt2_split = hf_tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    gpt2_split.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert any(gpt2_split.encode(text, add_special_tokens=False).ids != tok(text, add_special_tokens=False)["input_ids"]
               for text in PHI4_STRINGS)

    config = json.loads((folder / "config.json").read_text())
    full_rotary = {k: v for k, v in config.items() if k != "partial_rotary_factor"}
    full_rotary["rope_parameters"] = {k: v for k, v in config["rope_parameters"].items()
                                      if k != "partial_rotary_factor"}
    (folder / "config.json").write_text(json.dumps(full_rotary))
    plain = convert_checkpoint(folder, tmp_path / "full-rotary.gguf", "f32")
    with ScoringModel(plain.path, n_ctx=128) as llama:
        assert np.abs(llama.logits(ids) - theirs).max() > bound

    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(ConversionError, match="not tied"):
        convert_checkpoint(folder, tmp_path / "untied.gguf", "f32")
    assert not (tmp_path / "untied.gguf").exists()
