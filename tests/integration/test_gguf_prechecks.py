"""Headers llama.cpp aborts on (found by fuzzing) are refused by hearth in one line, naming the key.

Each case is the embedded model's header with a key set, retyped or removed. The first test shows
hearth refuses it before llama.cpp sees the file; the second (slow) shows why that is needed:
handed straight to llama.cpp, each of these files ends the process (GGML_ASSERT or an uncaught
C++ exception), so a hearth that let it through would crash rather than report.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from gguf_mutations import ARRAY, BOOL, F32, I32, STRING, U32, U64, Mutation, write_case, write_rebuilt
from typer.testing import CliRunner

from hearth.cli.app import app
from hearth.errors import BadModelFileError
from hearth.runtime.gguf_checks import check_vocabulary
from hearth.runtime.gguf_file import read_gguf


def _spm_tokens(tokens: list[str], missing_byte: int) -> list[str]:
    """The vocabulary as SentencePiece would spell it: byte tokens first, one of them missing."""
    spm = [f"<0x{b:02X}>" for b in range(256)] + tokens[256:]
    spm[missing_byte] = "<unused-byte-slot>"
    return spm


# name -> (changes to the header, what the error must name). Each one aborts llama.cpp 0.3.36.
LLAMA_CPP_ABORTS = {
    "no layers": ({"set_values": {"llama.block_count": (U32, 0)}}, "llama.block_count"),
    "too many layers": ({"set_values": {"llama.block_count": (U32, 513)}}, "llama.block_count"),
    "more next-token layers than layers": ({"set_values": {"llama.nextn_predict_layers": (U32, 31)}},
                                           "llama.nextn_predict_layers"),
    "too many experts": ({"set_values": {"llama.expert_count": (U32, 1025), "llama.expert_used_count": (U32, 2)}},
                         "llama.expert_count"),
    "experts, none used": ({"set_values": {"llama.expert_count": (U32, 4)}}, "llama.expert_used_count"),
    "more experts used than exist": ({"set_values": {"llama.expert_count": (U32, 4), "llama.expert_used_count": (U32, 8)}},
                                     "llama.expert_used_count"),
    "experts used, none exist": ({"set_values": {"llama.expert_used_count": (U32, 2)}}, "llama.expert_used_count"),
    "as many expert groups as experts": ({"set_values": {"llama.expert_count": (U32, 8), "llama.expert_used_count": (U32, 2),
                                                         "llama.expert_group_count": (U32, 8)}}, "llama.expert_group_count"),
    "experts not divisible into groups": ({"set_values": {"llama.expert_count": (U32, 8), "llama.expert_used_count": (U32, 2),
                                                          "llama.expert_group_count": (U32, 3),
                                                          "llama.expert_group_used_count": (U32, 1)}},
                                          "llama.expert_group_count"),
    "expert groups, none used": ({"set_values": {"llama.expert_count": (U32, 8), "llama.expert_used_count": (U32, 2),
                                                 "llama.expert_group_count": (U32, 4)}}, "llama.expert_group_count"),
    "expert groups without experts": ({"set_values": {"llama.expert_group_count": (U32, 4)}}, "llama.expert_group_count"),
    "unknown RoPE scaling": ({"set_values": {"llama.rope.scaling.type": (STRING, "nosuch")}}, "llama.rope.scaling.type"),
    "NaN norm epsilon": ({"set_values": {"llama.attention.layer_norm_rms_epsilon": (F32, float("nan"))}},
                         "llama.attention.layer_norm_rms_epsilon"),
    "negative norm epsilon": ({"set_values": {"llama.attention.layer_norm_rms_epsilon": (F32, -1.0)}},
                              "llama.attention.layer_norm_rms_epsilon"),
    "a token twice": ("duplicate token", "tokenizer.ggml.tokens"),
    "no tokenizer": ({"set_values": {"tokenizer.ggml.model": (STRING, "none")}}, "tokenizer.ggml.model"),
    "SentencePiece without a byte token": ("spm without 0x41", "<0x41>"),
}

# Values hearth's own planner choked on (a traceback, or lists of billions of layers).
PLANNER_BREAKERS = {
    "block count as text": ({"set_values": {"llama.block_count": (STRING, "thirty")}}, "llama.block_count"),
    "block count as a list": ({"set_values": {"llama.block_count": (ARRAY, [30, 30], U32)}}, "llama.block_count"),
    "block count of 2**40": ({"set_values": {"llama.block_count": (U64, 2**40)}}, "llama.block_count"),
    "negative block count": ({"set_values": {"llama.block_count": (I32, -1)}}, "llama.block_count"),
    "head count as a bool": ({"set_values": {"llama.attention.head_count": (BOOL, True)}}, "llama.attention.head_count"),
    "huge key length": ({"set_values": {"llama.attention.key_length": (U32, 2**32 - 1)}}, "llama.attention.key_length"),
    "alignment as text": ({"set_values": {"general.alignment": (STRING, "x")}}, "general.alignment"),
    "alignment not a power of two": ({"set_values": {"general.alignment": (U32, 48)}}, "general.alignment"),
}


@pytest.fixture(scope="module")
def header(default_model_path):
    info = read_gguf(default_model_path)
    with open(default_model_path, "rb") as handle:
        region = handle.read(info.data_offset)
    return region, info.file_size, info.read_array("tokenizer.ggml.tokens")


def _damaged(header, changes, path):
    region, size, tokens = header
    if changes == "duplicate token":
        changes = {"set_values": {"tokenizer.ggml.tokens": (ARRAY, tokens[:100] + tokens[99:-1], STRING)}}
    elif changes == "spm without 0x41":
        changes = {"set_values": {"tokenizer.ggml.model": (STRING, "llama"),
                                  "tokenizer.ggml.tokens": (ARRAY, _spm_tokens(tokens, 0x41), STRING)}}
    return write_rebuilt(region, path, size, **changes)


@pytest.mark.parametrize("name", list(LLAMA_CPP_ABORTS) + list(PLANNER_BREAKERS))
def test_refused_before_llama_cpp_in_one_line(name, header, tmp_path):
    changes, names = {**LLAMA_CPP_ABORTS, **PLANNER_BREAKERS}[name]
    path = _damaged(header, changes, tmp_path / "damaged.gguf")
    with pytest.raises(BadModelFileError) as refused:
        check_vocabulary(read_gguf(path))  # what `load_model` runs before llama.cpp sees the file
    assert str(path) in refused.value.message and names in refused.value.message
    assert "\n" not in refused.value.message
    for command in (["run", "-m", str(path), "hi", "-n", "1"], ["plan", str(path)]):
        result = CliRunner().invoke(app, command)
        if command[0] == "plan" and names.startswith(("tokenizer", "<0x")):
            assert result.exit_code == 0, result.stderr  # plan reads only the header, not the vocabulary
            continue
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) <= 2


def test_the_intact_header_passes(header, tmp_path):
    path = _damaged(header, {}, tmp_path / "rebuilt.gguf")
    check_vocabulary(read_gguf(path))


# Loads the file into llama.cpp directly (no hearth), tokenizes text with a byte the vocabulary
# may lack, and evaluates it: the steps where llama.cpp asserts.
_STRAIGHT_TO_LLAMA_CPP = textwrap.dedent("""
    import sys, llama_cpp as l
    quiet = l.llama_log_callback(lambda *a: None)  # kept referenced: C holds only its pointer
    l.llama_log_set(quiet, None)
    l.llama_backend_init()
    params = l.llama_model_default_params()
    params.use_extra_bufts = False  # llama.cpp's AMX kernels crash on some CPUs (see hardware.py)
    model = l.llama_model_load_from_file(sys.argv[1].encode(), params)
    if not model:
        sys.exit(3)
    text = "A\\u00c4 \\U0001F600\\n".encode()
    tokens = (l.llama_token * 64)()
    n = l.llama_tokenize(l.llama_model_get_vocab(model), text, len(text), tokens, 64, True, False)
    cparams = l.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 256, 1, 1
    ctx = l.llama_init_from_model(model, cparams)
    sys.exit(0 if l.llama_decode(ctx, l.llama_batch_get_one(tokens, n)) == 0 else 4)
""")


def _straight_to_llama_cpp(path) -> int:
    return subprocess.run([sys.executable, "-c", _STRAIGHT_TO_LLAMA_CPP, str(path)], capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL).returncode


@pytest.mark.slow
def test_llama_cpp_itself_aborts_on_each_refused_header(header, tmp_path):
    assert _straight_to_llama_cpp(_damaged(header, {}, tmp_path / "intact.gguf")) == 0  # the harness works
    ended = {name: _straight_to_llama_cpp(_damaged(header, changes, tmp_path / "damaged.gguf"))
             for name, (changes, _) in LLAMA_CPP_ABORTS.items()}
    assert all(code == -signal.SIGABRT for code in ended.values()), ended  # every one aborted


def test_damage_is_located_in_one_line(header, tmp_path):
    """The reliability issue's case: a damaged value type names the file, the key and the byte."""
    region, size, _ = header
    data = bytearray(region)
    key = b"llama.block_count"
    type_at = data.index(key) + len(key)
    data[type_at:type_at + 4] = (2020175149).to_bytes(4, "little")
    path = write_case(Mutation(0, "", bytes(data), False), tmp_path / "bad-type.gguf", size)
    with pytest.raises(BadModelFileError) as refused:
        read_gguf(path)
    message = refused.value.message
    assert message.startswith(f"{path} is corrupted at byte {type_at:,} ")
    assert "'llama.block_count'" in message and "unknown metadata value type 2020175149" in message


@pytest.mark.parametrize("template,needle", [
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "ran for over"),
    ("{{ 'a' * 10**9 }}", "builds a value over"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
], ids=["endless loop", "huge string", "attribute escape"])
def test_hostile_chat_template_in_a_model_is_one_line(header, tmp_path, template, needle, monkeypatch):
    """The template comes from the model file: `hearth run` with it ends in one line, in bounded time."""
    from hearth.runtime import templates

    monkeypatch.setattr(templates, "RENDER_TIME_LIMIT_S", 0.5)
    path = _damaged(header, {"set_values": {"tokenizer.chat_template": (STRING, template)}}, tmp_path / "t.gguf")
    result = CliRunner().invoke(app, ["run", "-m", str(path), "hi", "-n", "1"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.stderr
    assert result.stderr.startswith("error: the model's chat template") and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
