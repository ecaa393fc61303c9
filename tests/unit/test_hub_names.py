"""Pure functions of the model store: quant names, split grouping, references, safe paths."""

from __future__ import annotations

import pytest

from hearth.units import format_bytes
from hearth.hub.store import (ModelFiles, expected_digest, group_gguf_files, is_safe_repo_path,
                              match_label, parse_reference, quant_of, split_parts)


@pytest.mark.parametrize("filename, quant", [
    ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
    ("gemma-3-270m-it-IQ4_XS.gguf", "IQ4_XS"),
    ("Llama-3.2-1B-Instruct-f16.gguf", "F16"),
    ("Llama-3.2-1B-Instruct-BF16.gguf", "BF16"),
    ("model.Q5_K_S.gguf", "Q5_K_S"),
    ("gemma-3-12b-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ("Q8_0/Big-Model-Q8_0-00001-of-00003.gguf", "Q8_0"),
    ("ggml-model-tq1_0.gguf", "TQ1_0"),
    ("Qwen2.5-7B.gguf", None),  # "Q" without a quant shape
    ("model.gguf", None),
    ("mistral-7b-instruct-v0.2.Q2_K.gguf", "Q2_K"),
])
def test_quant_of(filename, quant):
    assert quant_of(filename) == quant


def test_group_gguf_files_joins_split_parts_and_skips_projectors():
    sizes = {
        "M-Q4_K_M.gguf": 10,
        "M-Q8_0-00002-of-00002.gguf": 20,
        "M-Q8_0-00001-of-00002.gguf": 30,
        "mmproj-M-f16.gguf": 5,
        "README.md": 1,
        "plain.gguf": 7,
    }
    models = group_gguf_files(sizes)
    assert models == [
        ModelFiles("Q4_K_M", "Q4_K_M", ("M-Q4_K_M.gguf",), 10),
        ModelFiles("Q8_0", "Q8_0", ("M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf"), 50),
        ModelFiles("plain", None, ("plain.gguf",), 7),
    ]


def test_group_gguf_files_leaves_out_an_incomplete_split_set():
    names = ["A-Q4_K_M-00001-of-00003.gguf", "A-Q4_K_M-00003-of-00003.gguf"]
    assert group_gguf_files(names) == []


def test_group_gguf_files_in_subfolders():
    names = ["Q8_0/A-Q8_0-00001-of-00002.gguf", "Q8_0/A-Q8_0-00002-of-00002.gguf", "A-Q4_K_M.gguf"]
    labels = {m.label: m.files for m in group_gguf_files(names)}
    assert labels == {"Q4_K_M": ("A-Q4_K_M.gguf",),
                      "Q8_0": ("Q8_0/A-Q8_0-00001-of-00002.gguf", "Q8_0/A-Q8_0-00002-of-00002.gguf")}


@pytest.mark.parametrize("wanted, files", [
    ("Q4_K_M", ("a-Q4_K_M.gguf",)),
    ("q4_k_m", ("a-Q4_K_M.gguf",)),
    ("Q4_K_XL", ("a-UD-Q4_K_XL.gguf",)),  # UD- prefix optional
    ("ud-q4_k_xl", ("a-UD-Q4_K_XL.gguf",)),
    ("plain", ("plain.gguf",)),  # no quant in the name: the stem is the label
    ("Q5_K_M", None),
])
def test_match_label(wanted, files):
    models = group_gguf_files(["a-Q4_K_M.gguf", "a-UD-Q4_K_XL.gguf", "plain.gguf"])
    hit = match_label(models, wanted)
    assert (hit.files if hit else None) == files


@pytest.mark.parametrize("reference, parsed", [
    ("bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", ("bartowski/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M")),
    ("org/name", ("org/name", None)),
    ("org/name:", ("org/name", None)),
    ("hf.co/org/name:q8_0", ("org/name", "q8_0")),
    ("https://huggingface.co/org/name", ("org/name", None)),
    ("default", None),
    ("./model.gguf", None),
    ("/abs/model.gguf", None),
    ("org/../etc", None),
    ("a/b/c", None),
    ("org--x/name", None),
])
def test_parse_reference(reference, parsed):
    assert parse_reference(reference) == parsed


@pytest.mark.parametrize("name, safe", [
    ("model-Q4_K_M.gguf", True),
    ("Q8_0/part-00001-of-00002.gguf", True),
    ("../escape.gguf", False),
    ("a/../../escape.gguf", False),
    ("/etc/passwd", False),
    ("a\\..\\b.gguf", False),
    ("./a.gguf", False),
    ("", False),
])
def test_is_safe_repo_path(name, safe):
    assert is_safe_repo_path(name) is safe


def test_expected_digest_reads_the_blob_name():
    assert expected_digest("a" * 64) == ("sha256", "a" * 64)
    assert expected_digest("b" * 40) == ("git-sha1", "b" * 40)
    assert expected_digest("a" * 64 + ".incomplete") is None


def test_split_parts(tmp_path):
    part = tmp_path / "M-Q8_0-00002-of-00003.gguf"
    assert [p.name for p in split_parts(part)] == [f"M-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert split_parts(tmp_path / "single.gguf") == [tmp_path / "single.gguf"]


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1536, "1.5 KB"), (3 << 30, "3.0 GB"), (2 << 50, "2.0 PB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
