"""Bad input to `convert`: each refused with a one-line message, nothing half-written left behind.

Checkpoints here are hand-made with numpy + safetensors (a 1-layer llama with a byte-level
vocabulary of the 256 byte symbols), so these tests need neither torch nor llama.cpp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from hearth.errors import ConversionError, DiskSpaceError, UsageError  # noqa: E402
from hearth.quantize.convert import convert_checkpoint, plan_conversion  # noqa: E402
from hearth.runtime.gguf_file import read_gguf  # noqa: E402

HIDDEN, FF, VOCAB = 32, 64, 258


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (space is "\u0120")."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}
    return [mapping[b] for b in range(256)]


def write_checkpoint(folder: Path, arch: str = "LlamaForCausalLM", shapes: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": [arch], "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 128, "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config))
    symbols = byte_symbols() + ["\u0120t", "he"]  # "Ġt" (space + t) and "he", made by the two merges
    tokenizer = {"model": {"type": "BPE", "vocab": {s: i for i, s in enumerate(symbols)},
                           "merges": ["\u0120 t", "h e"]},
                 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
                 "added_tokens": []}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    rng = np.random.default_rng(0)
    default = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "lm_head.weight": (VOCAB, HIDDEN),
               "model.norm.weight": (HIDDEN,), "model.layers.0.input_layernorm.weight": (HIDDEN,),
               "model.layers.0.post_attention_layernorm.weight": (HIDDEN,),
               "model.layers.0.self_attn.q_proj.weight": (HIDDEN, HIDDEN),
               "model.layers.0.self_attn.k_proj.weight": (HIDDEN // 2, HIDDEN),
               "model.layers.0.self_attn.v_proj.weight": (HIDDEN // 2, HIDDEN),
               "model.layers.0.self_attn.o_proj.weight": (HIDDEN, HIDDEN),
               "model.layers.0.mlp.gate_proj.weight": (FF, HIDDEN), "model.layers.0.mlp.up_proj.weight": (FF, HIDDEN),
               "model.layers.0.mlp.down_proj.weight": (HIDDEN, FF)}
    default.update(shapes or {})
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in default.items()}
    safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_a_good_checkpoint_converts(tmp_path):
    result = convert_checkpoint(write_checkpoint(tmp_path / "ok"), tmp_path / "ok.gguf", "f16")
    info = read_gguf(result.path)
    assert info.architecture == "llama" and len(info.tensors) == 12
    assert info.metadata["tokenizer.ggml.pre"] == "gpt-2"
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_config(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(ConversionError, match="has no config.json"):
        plan_conversion(folder)


def test_unknown_architecture_lists_supported(tmp_path):
    with pytest.raises(ConversionError, match="unsupported architecture 'GPTNeoXForCausalLM'") as refused:
        plan_conversion(write_checkpoint(tmp_path / "m", arch="GPTNeoXForCausalLM"))
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                 "Gemma3ForCausalLM", "Phi3ForCausalLM"):
        assert arch in refused.value.hint


def test_truncated_shard(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    shard = folder / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ConversionError, match="truncated"):
        plan_conversion(folder)


def test_shape_mismatch_with_config(tmp_path):
    folder = write_checkpoint(tmp_path / "m", shapes={"model.layers.0.self_attn.q_proj.weight": (HIDDEN, 16)})
    with pytest.raises(ConversionError, match=r"q_proj.weight' has shape \[32, 16\].*\[32, 32\]"):
        plan_conversion(folder)


def test_pickle_only_repo_is_refused(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="only pickle weights"):
        plan_conversion(folder)


def test_missing_layer(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="no tensors for layer 1"):
        plan_conversion(folder)


@pytest.mark.parametrize("tied", [True, False])
def test_missing_lm_head_needs_tied_embeddings(tied, tmp_path):
    """Without lm_head llama.cpp reuses the embeddings: right only when config.json ties them."""
    folder = write_checkpoint(tmp_path / "m")
    tensors = safetensors_numpy.load_file(str(folder / "model.safetensors"))
    del tensors["lm_head.weight"]
    safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": tied}))
    if tied:
        assert "output.weight" not in {t.name for t in plan_conversion(folder).tensors}
    else:
        with pytest.raises(ConversionError, match="not tied to the embeddings.*no lm_head"):
            plan_conversion(folder)


def test_unknown_outtype(tmp_path):
    with pytest.raises(UsageError, match="unknown output type"):
        plan_conversion(write_checkpoint(tmp_path / "m"), "q4_0")


def test_unknown_pre_tokenizer(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="unrecognised BPE pre-tokenizer"):
        plan_conversion(folder)


def test_disk_full_mid_write_leaves_nothing(tmp_path):
    """A real kernel limit on file size (RLIMIT_FSIZE) makes the write fail part-way."""
    folder = write_checkpoint(tmp_path / "m", shapes={"model.embed_tokens.weight": (VOCAB * 8, HIDDEN),
                                                      "lm_head.weight": (VOCAB * 8, HIDDEN)})
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = VOCAB * 8
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))\n"
        "from hearth.cli.app import main\n"
        "sys.argv = ['hearth'] + sys.argv[1:]\n"
        "main()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", script, "convert", str(folder), "-o", str(out), "--outtype", "f32",
                           "--no-register"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == DiskSpaceError.exit_code
    assert f"error: the file would exceed the file-size limit: could not write {out}; nothing was left behind" \
        in proc.stderr
    assert list(out.parent.iterdir()) == []
