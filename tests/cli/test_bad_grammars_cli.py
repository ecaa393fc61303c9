"""Bad `--grammar` files: one line on stderr and exit 2, never a crash or a hang.

The grammars in CRASHING made llama.cpp itself abort or overflow its stack (or allocate for
20 s); `test_llama_cpp_itself_crashes_on_them` keeps the evidence. The others llama.cpp refuses
on its own, but printed its error and the whole grammar on stderr: hearth turns that into one line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

# name -> (grammar, what the one-line error says)
CRASHING = {
    "parentheses nested 100,000 deep": ("root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000, "nested more than"),
    "character range backwards": ("root ::= [z-a]", "runs backwards"),
    "escaped range backwards": ("root ::= [\\x7a-\\x61]+", "runs backwards"),
    "token past the vocabulary": ("root ::= <[999999999]>", "past the model's vocabulary"),
    "token one past the vocabulary": ('root ::= "x" !<[49152]>', "past the model's vocabulary"),
    "repetition maximum below minimum": ('root ::= "a"{5,2}', "maximum below its minimum"),
}
REFUSED_BY_LLAMA_CPP = {
    "undefined rule": ("root ::= answer", "Undefined rule identifier 'answer'"),
    "no root rule": ('answer ::= "yes"', "does not parse"),
    "left recursion": ('root ::= root "a" | "b"', "does not parse"),
    "unterminated string": ('root ::= "yes', "unexpected end of input"),
    "unknown escape": ('root ::= "\\q"', "unknown escape"),
    "too many repetitions": ('root ::= "a"{1000000000}', "number of repetitions exceeds"),
    "unknown token name": ("root ::= <|nosuch|>", "invalid token"),
    "only a comment": ("# nothing here\n", "does not parse"),
}


def _one_line_error(done, needle: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[:5]
    assert needle in lines[0], lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize("name", list(CRASHING) + list(REFUSED_BY_LLAMA_CPP))
def test_bad_grammar_is_one_line(hearth, tmp_path, name):
    grammar, needle = {**CRASHING, **REFUSED_BY_LLAMA_CPP}[name]
    path = tmp_path / "bad.gbnf"
    path.write_text(grammar)
    _one_line_error(hearth("run", "Say yes", "-n", "4", "--grammar", str(path), timeout=60), needle)


def test_good_grammar_still_constrains(hearth, tmp_path):
    path = tmp_path / "yes.gbnf"
    path.write_text('# a comment with ( and [z-a] in it\nroot ::= ("yes" | "no") [.!]{0,1}\n')
    done = hearth("run", "Is water wet?", "-n", "4", "--temp", "0", "--grammar", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("yes", "no", "yes.", "no.", "yes!", "no!")


# Hands a grammar straight to llama.cpp (no hearth checks) and samples one token with it.
_STRAIGHT_TO_LLAMA_CPP = textwrap.dedent("""
    import sys, llama_cpp as l
    quiet = l.llama_log_callback(lambda *a: None)  # kept referenced: C holds only its pointer
    l.llama_log_set(quiet, None)
    l.llama_backend_init()
    params = l.llama_model_default_params()
    params.use_extra_bufts = False  # llama.cpp's AMX kernels crash on some CPUs (see hardware.py)
    model = l.llama_model_load_from_file(sys.argv[1].encode(), params)
    vocab = l.llama_model_get_vocab(model)
    grammar = l.llama_sampler_init_grammar(vocab, open(sys.argv[2], "rb").read(), b"root")
    if not grammar:
        sys.exit(3)
    cparams = l.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 256, 1, 1
    ctx = l.llama_init_from_model(model, cparams)
    tokens = (l.llama_token * 1)(l.llama_vocab_bos(vocab))
    l.llama_decode(ctx, l.llama_batch_get_one(tokens, 1))
    l.llama_sampler_sample(grammar, ctx, -1)
""")


@pytest.mark.slow
def test_llama_cpp_itself_crashes_on_them(tmp_path, default_model_path):
    """Without hearth's checks, these grammars kill the process (the slow bad_alloc one is left out)."""
    ended = {}
    for name in ("parentheses nested 100,000 deep", "character range backwards", "token past the vocabulary"):
        path = tmp_path / "grammar.gbnf"
        path.write_text(CRASHING[name][0])
        ended[name] = subprocess.run([sys.executable, "-c", _STRAIGHT_TO_LLAMA_CPP, str(default_model_path), str(path)],
                                     capture_output=True, timeout=120).returncode
    assert ended == {"parentheses nested 100,000 deep": -signal.SIGSEGV, "character range backwards": -signal.SIGABRT,
                     "token past the vocabulary": -signal.SIGABRT}, ended
