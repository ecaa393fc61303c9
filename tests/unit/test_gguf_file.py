"""The GGUF header reader: real files parse; damaged files give one-line HearthErrors."""

from __future__ import annotations

import pytest

from hearth.errors import BadModelFileError, ModelNotFoundError
from hearth.runtime.gguf_file import read_gguf


def test_reads_embedded_model_header(default_model_path):
    info = read_gguf(default_model_path)
    assert info.architecture == "llama"
    assert info.arch_value("block_count") == 30
    assert info.arch_value("attention.head_count_kv") == 3
    assert info.arch_value("context_length") == 8192
    assert len(info.tensors) == 272
    assert info.chat_template and "<|im_start|>" in info.chat_template
    # weights end exactly at the end of the file (no gaps, no overlaps past the end)
    last = max(info.tensors, key=lambda t: t.offset)
    assert last.offset + last.n_bytes <= info.file_size
    assert 130_000_000 < info.n_params < 140_000_000
    tokens = info.read_array("tokenizer.ggml.tokens")
    assert len(tokens) == 49152 and tokens[2] == "<|im_end|>"


def test_missing_file_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        read_gguf(tmp_path / "nope.gguf")


def test_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("this is a text file, not a model, but long enough to read")
    with pytest.raises(BadModelFileError, match="bad magic"):
        read_gguf(path)


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(BadModelFileError, match="too small"):
        read_gguf(path)


def test_directory(tmp_path):
    with pytest.raises(BadModelFileError, match="directory"):
        read_gguf(tmp_path)


@pytest.mark.parametrize("keep", [1_000, 1_000_000, 50_000_000])
def test_truncated_copies_are_refused(tmp_path, default_model_path, keep):
    path = tmp_path / "cut.gguf"
    with open(default_model_path, "rb") as src:
        path.write_bytes(src.read(keep))
    with pytest.raises(BadModelFileError, match="truncated"):
        read_gguf(path)


def test_corrupted_counts_are_refused(tmp_path, default_model_path):
    data = bytearray(default_model_path.read_bytes()[:4096])
    data[8:16] = (2**40).to_bytes(8, "little")  # tensor count
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(BadModelFileError, match="corrupted"):
        read_gguf(path)


def test_corrupted_tensor_type_is_refused(tmp_path, default_model_path):
    info = read_gguf(default_model_path)
    data = bytearray(default_model_path.read_bytes())
    # find the first tensor info record: its name, then dims, then the type field
    name = b"token_embd.weight"
    at = data.index(name, 0, info.data_offset) + len(name)
    n_dims = int.from_bytes(data[at:at + 4], "little")
    type_at = at + 4 + 8 * n_dims
    data[type_at:type_at + 4] = (999).to_bytes(4, "little")
    path = tmp_path / "badtype.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(BadModelFileError, match="unknown type 999"):
        read_gguf(path)
