"""The engine: the only module that imports llama_cpp for inference.

Each C object (model, context, batch, sampler) is wrapped in a small class that owns the pointer
and frees it deterministically (`close()`, or the owning `Engine.close()`). The engine exposes
primitive operations — tokenize, add tokens to a batch with sequence ids, decode, sample a row,
per-sequence KV operations, read a logits row — and `runtime/scheduler.py` builds the scheduler
(one-sequence runs, K samples sharing a prompt, continuous batching) on top of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BadModelFileError, ConversionError, RuntimeFailure, UsageError
from .sampling import SamplingParams


@functools.lru_cache(maxsize=1)
def _llama():
    import llama_cpp

    return llama_cpp


def backend_info() -> dict:
    """What this llama.cpp build can do: GPU offload, mmap/mlock, and its system-info line."""
    lib = _llama()
    lib.llama_backend_init()
    return {
        "llama_cpp_python": lib.__version__,
        "gpu_offload": bool(lib.llama_supports_gpu_offload()),
        "mmap": bool(lib.llama_supports_mmap()),
        "mlock": bool(lib.llama_supports_mlock()),
        "rpc": bool(lib.llama_supports_rpc()),
        "system_info": lib.llama_print_system_info().decode("utf-8", "replace").strip(),
    }


# ---------------------------------------------------------------- CPU weight buffers

class _Override(ctypes.Structure):  # llama_model_tensor_buft_override
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@functools.lru_cache(maxsize=1)
def repack_buffer_type() -> int | None:
    """The address of llama.cpp's CPU_REPACK buffer type (None: this build has none)."""
    libdir = os.path.join(os.path.dirname(_llama().__file__), "lib")
    try:
        ggml = ctypes.CDLL(os.path.join(libdir, "libggml.so"))
        base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    except OSError:  # another layout or platform (CPU_REPACK without AMX matters on x86 Linux)
        return None
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    device = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not device:
        return None
    getter = base.ggml_backend_reg_get_proc_address(base.ggml_backend_dev_backend_reg(device),
                                                    b"ggml_backend_dev_get_extra_bufts")
    if not getter:
        return None
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(getter)(device)
    index = 0
    while bufts and bufts[index]:
        if base.ggml_backend_buft_name(bufts[index]) == b"CPU_REPACK":
            return bufts[index]
        index += 1
    return None


class RepackOverrides:
    """The override array for `llama_model_params.tensor_buft_overrides`; keep it alive while
    the model loads (llama.cpp reads the patterns then)."""

    def __init__(self, patterns: list[str], buft: int):
        self.patterns = patterns
        self._encoded = [p.encode() for p in patterns]
        self._array = (_Override * (len(patterns) + 1))()
        for slot, pattern in zip(self._array, self._encoded):
            slot.pattern, slot.buft = pattern, buft
        self._array[len(patterns)].pattern = None  # the terminator

    @property
    def address(self) -> int:
        return ctypes.addressof(self._array)


def repack_overrides(model_path, system_info: str) -> RepackOverrides | None:
    """Overrides sending this model's repackable weights to CPU_REPACK (None: nothing to send)."""
    from .gguf_file import read_gguf
    from .repack import build_features, override_patterns, repacked_tensors

    names = repacked_tensors(read_gguf(model_path).tensors, build_features(system_info))
    if not names:
        return None
    buft = repack_buffer_type()
    if buft is None:
        return None
    return RepackOverrides(override_patterns(names), buft)


def apply_weight_buffers(params, model_path, n_gpu_layers: int = 0, vocab_only: bool = False,
                         prompt_only: bool = False) -> RepackOverrides | None:
    """Set `llama_model_params` for this machine's choice of CPU weight buffers
    (`hardware.cpu_weight_buffers`): `use_extra_bufts`, and in "repack" mode the overrides, which
    are returned and must stay alive until the model is loaded (None when there are none).

    `prompt_only`: a load that evaluates prompts only (scoring), see `cpu_weight_buffers`."""
    from .hardware import local_cpu_weight_buffers

    mode = local_cpu_weight_buffers(prompt_only)
    params.use_extra_bufts = mode == "all"
    if mode != "repack" or vocab_only or n_gpu_layers > 0:
        return None
    overrides = repack_overrides(model_path, backend_info()["system_info"])
    if overrides is not None:
        params.tensor_buft_overrides = overrides.address
    return overrides


# (C function pointer, the Python function it calls): llama.cpp keeps the pointer, so keep both alive
_log_callback: tuple | None = None
_previous_callbacks: list[tuple] = []  # one replaced callback may still be mid-call: keep it a while
_deferred_interrupt = False  # a Ctrl-C that struck inside a log callback, raised when C returns
_previous_unraisablehook = None


def _catch_interrupt_in_callback(unraisable) -> None:
    """sys.unraisablehook: a Ctrl-C that lands while llama.cpp is calling our log callback.

    Python runs signal handlers between bytecodes, so KeyboardInterrupt can be raised inside the
    callback; ctypes cannot pass it through C and drops it with a printed traceback, and the
    interrupt would be lost (a batch ran on to the end and exited 0). It is kept instead and
    raised by `raise_deferred_interrupt()` once llama.cpp has returned to Python."""
    global _deferred_interrupt
    bridges = [bridge for _, bridge in [*_previous_callbacks, *([_log_callback] if _log_callback else [])]]
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and any(unraisable.object is b for b in bridges):
        _deferred_interrupt = True
        return
    (_previous_unraisablehook or sys.__unraisablehook__)(unraisable)


def raise_deferred_interrupt() -> None:
    """Raise the Ctrl-C a log callback swallowed, if any (see `_catch_interrupt_in_callback`)."""
    global _deferred_interrupt
    if _deferred_interrupt:
        _deferred_interrupt = False
        raise KeyboardInterrupt


def set_log_handler(handler) -> None:
    """Route llama.cpp's own log (written from C) to `handler(level, text_bytes)`.

    The one owner of llama.cpp's log callback: the engine forwards it to stderr with -vv and
    drops it otherwise; the quantizer reads its per-tensor progress lines from it. A Ctrl-C
    that strikes inside the callback is not lost: it is raised when llama.cpp returns."""
    global _log_callback, _previous_unraisablehook
    lib = _llama()

    def bridge(level, text, user_data):
        global _deferred_interrupt
        try:
            handler(level, text or b"")
        except KeyboardInterrupt:
            _deferred_interrupt = True

    if sys.unraisablehook is not _catch_interrupt_in_callback:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _catch_interrupt_in_callback
    if _log_callback is not None:
        _previous_callbacks.append(_log_callback)
        del _previous_callbacks[:-2]
    _log_callback = (lib.llama_log_callback(bridge), bridge)
    lib.llama_log_set(_log_callback[0], ctypes.c_void_p(0))


def set_llama_logging(verbose: bool) -> None:
    """Silence llama.cpp's own log (it writes to stderr from C) unless verbose."""

    def forward(level, text: bytes) -> None:
        if verbose:
            sys.stderr.write(text.decode("utf-8", "replace"))

    set_log_handler(forward)


@dataclass(frozen=True)
class ContextConfig:
    """How the context is built; the fit planner (runtime/plan.py) chooses these numbers."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int = 2
    n_threads_batch: int = 2
    n_gpu_layers: int = 0
    flash_attn: bool | None = None  # None: llama.cpp decides (auto)
    # True: one KV buffer shared by all sequences, so a prompt token can belong to several
    # sequences (K samples share one prompt evaluation). False: one KV stream per sequence, each
    # of n_ctx / n_seq_max cells; attention then spans only the sequence's own stream, which keeps
    # many unrelated sequences (batch) fast, and sequences are forked by copying a whole stream.
    kv_unified: bool = True
    # GGML type of the K and V cache (None: llama.cpp's F16); F32 (0) for scoring, whose logits are
    # compared to 1e-3 against other runtimes; BF16 (30) to speculate on a CPU (hardware.py)
    kv_type: int | None = None


class LlamaModel:
    """Owns a `llama_model *` and its vocabulary."""

    def __init__(self, path: Path, n_gpu_layers: int = 0, vocab_only: bool = False, prompt_only: bool = False):
        lib = _llama()
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.vocab_only = vocab_only
        # CPU weight buffers (AMX, repacked rows) as chosen for this machine; the overrides of
        # "repack" mode stay referenced while llama.cpp reads them
        self._overrides = apply_weight_buffers(params, path, n_gpu_layers, vocab_only, prompt_only)
        self._lib = lib
        self.ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise BadModelFileError(f"llama.cpp could not load {path}", hint="run `hearth show` on it, or -vv for llama.cpp's log")
        self.vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.ptr)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self._piece_cache: dict[int, bytes] = {}

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the size needed
            capacity = -n
            buf = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (control tokens render as nothing)."""
        cached = self._piece_cache.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            cached = self._piece_cache[token] = buf.raw[:n]
        return cached

    def token_text(self, token: int) -> str:
        """A token's text with control tokens rendered (e.g. `<|im_start|>`); "" for -1."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(128)
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, 128, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    @property
    def bos_id(self) -> int:
        return int(self._lib.llama_vocab_bos(self.vocab))

    @property
    def eos_id(self) -> int:
        return int(self._lib.llama_vocab_eos(self.vocab))

    def token_bytes(self, token: int) -> bytes:
        """A token's text as the vocabulary stores it (special tokens included, no rendering)."""
        return self._lib.llama_vocab_get_text(self.vocab, token) or b""

    @property
    def bos_text(self) -> str:
        return self.token_text(self._lib.llama_vocab_bos(self.vocab))

    @property
    def eos_text(self) -> str:
        return self.token_text(self._lib.llama_vocab_eos(self.vocab))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            self._lib.llama_model_free(self.ptr)
            self.ptr = None


class LlamaContext:
    """Owns a `llama_context *`: the KV cache and the compute graph for one model."""

    def __init__(self, model: LlamaModel, config: ContextConfig):
        lib = _llama()
        params = lib.llama_context_default_params()
        params.n_ctx = config.n_ctx
        params.n_batch = config.n_batch
        params.n_ubatch = min(config.n_ubatch, config.n_batch)
        params.n_seq_max = config.n_seq_max
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads_batch
        params.no_perf = True
        params.kv_unified = config.kv_unified
        if config.kv_type is not None:
            params.type_k = params.type_v = config.kv_type
        if config.flash_attn is not None:
            params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._lib = lib
        self.model = model
        self.config = config
        self.ptr = lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise RuntimeFailure(f"llama.cpp could not create a context of {config.n_ctx} tokens",
                                 hint="try a smaller --ctx")
        self.n_ctx = lib.llama_n_ctx(self.ptr)
        # Cells one sequence can hold: all of them when unified, else its own stream's.
        self.n_ctx_seq = self.n_ctx if config.kv_unified else lib.llama_n_ctx_seq(self.ptr)
        self.memory = lib.llama_get_memory(self.ptr)

    def decode(self, batch: "TokenBatch") -> None:
        rc = self._lib.llama_decode(self.ptr, batch.raw)
        raise_deferred_interrupt()
        if rc != 0:
            if rc == 1:
                raise RuntimeFailure("the KV cache is full: no room for this batch", hint="use a larger --ctx or fewer parallel sequences")
            raise RuntimeFailure(f"llama_decode failed (code {rc})")

    def logits_row(self, index: int):
        """A numpy view (no copy) of the logits llama.cpp holds for batch row `index`."""
        import numpy as np

        ptr = self._lib.llama_get_logits_ith(self.ptr, index)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def seq_remove(self, seq_id: int, start: int = -1, end: int = -1) -> None:
        self._lib.llama_memory_seq_rm(self.memory, seq_id, start, end)

    def seq_copy(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        """Give `dst` the cells of `src` in [start, end). Unified: the cells are only tagged.

        Per-sequence streams: only a whole sequence can be copied (start = end = -1; llama.cpp
        asserts otherwise): dst's stream becomes a copy of src's at the next decode.
        """
        if not self.config.kv_unified and (start, end) != (-1, -1):
            raise ValueError("per-sequence KV streams copy whole sequences only")
        self._lib.llama_memory_seq_cp(self.memory, src, dst, start, end)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Give `dst` the cells of `src`'s first `n` positions, whichever the KV layout.

        Per-sequence streams cannot copy part of a sequence: the whole stream is copied, then
        cut back to `n` positions.
        """
        if self.config.kv_unified:
            self.seq_copy(src, dst, 0, n)
        else:
            self.seq_copy(src, dst)
            self.seq_remove(dst, n, -1)

    def clear(self) -> None:
        self._lib.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.ptr:
            self._lib.llama_free(self.ptr)
            self.ptr = None


class TokenBatch:
    """Owns a `llama_batch`: rows of (token, position, sequence ids, wants logits)."""

    def __init__(self, capacity: int, n_seq_max: int):
        lib = _llama()
        self._lib = lib
        self.capacity = capacity
        self.raw = lib.llama_batch_init(capacity, 0, max(1, n_seq_max))
        self.n = 0
        self.n_logits = 0

    def clear(self) -> None:
        self.n = 0
        self.n_logits = 0
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq_ids: Sequence[int], logits: bool) -> int:
        """Append one row; return its index (the row to sample from when logits=True)."""
        i = self.n
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = len(seq_ids)
        row = raw.seq_id[i]
        for j, seq in enumerate(seq_ids):
            row[j] = seq
        raw.logits[i] = logits
        self.n = i + 1
        self.n_logits += bool(logits)
        raw.n_tokens = self.n
        return i

    def close(self) -> None:
        if self.raw is not None:
            self._lib.llama_batch_free(self.raw)
            self.raw = None


class Sampler:
    """Owns a sampler chain: grammar → penalties → top-k → top-p → min-p → temperature → draw.

    With `draw=False` (temperature > 0) the chain stops before the draw: `candidates` gives the
    distribution the draw would sample from, so speculative decoding can apply its acceptance
    rule to it, and `accept` records the token chosen (grammar and penalty state).
    """

    def __init__(self, model: LlamaModel, params: SamplingParams, seed: int, draw: bool = True):
        lib = _llama()
        self._lib = lib
        self._cells = None  # llama_token_data rows for `candidates`, reused
        self.ptr = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.grammar:
            self._add(_grammar_sampler(lib, model, params.grammar, self.close))
        if params.repeat_penalty != 1.0:
            self._add(lib.llama_sampler_init_penalties(params.repeat_last_n, params.repeat_penalty, 0.0, 0.0))
        if params.temperature <= 0:
            self._add(lib.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            self._add(lib.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            self._add(lib.llama_sampler_init_min_p(params.min_p, 1))
        self._add(lib.llama_sampler_init_temp(params.temperature))
        if draw:
            self._add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def _add(self, sampler) -> None:
        self._lib.llama_sampler_chain_add(self.ptr, sampler)

    def sample(self, ctx: LlamaContext, row: int) -> int:
        """Draw (and accept) the next token from batch row `row` of the last decode."""
        return self._lib.llama_sampler_sample(self.ptr, ctx.ptr, row)

    def candidates(self, ctx: LlamaContext, row: int):
        """(token ids, probabilities) the chain leaves for row `row`: the draw's distribution."""
        import numpy as np

        lib, logits = self._lib, ctx.logits_row(row)
        if self._cells is None or len(self._cells) != len(logits):
            self._cells = np.zeros(len(logits), dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        cells = self._cells
        cells["id"] = np.arange(len(logits), dtype=np.int32)
        cells["logit"] = logits
        array = lib.llama_token_data_array(cells.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)),
                                           len(cells), -1, False)
        lib.llama_sampler_apply(self.ptr, ctypes.byref(array))
        size = array.size  # the samplers may shrink the array and point it elsewhere
        raw = (ctypes.c_char * (12 * size)).from_address(ctypes.addressof(array.data.contents))
        kept = np.frombuffer(raw, dtype=cells.dtype)
        scores = kept["logit"].astype(np.float64)
        finite = np.isfinite(scores)
        ids, scores = kept["id"][finite].copy(), scores[finite]
        if not len(ids):
            raise RuntimeFailure("the sampler chain left no token to choose (a grammar with no way on?)")
        probs = np.exp(scores - scores.max())
        return ids, probs / probs.sum()

    def accept(self, token: int) -> None:
        """Record `token` as chosen (after `candidates`): grammar and penalties move on."""
        self._lib.llama_sampler_accept(self.ptr, token)

    def close(self) -> None:
        if self.ptr:
            self._lib.llama_sampler_free(self.ptr)
            self.ptr = None


def _grammar_sampler(lib, model: LlamaModel, text: str, on_error):
    """llama.cpp's grammar sampler, after hearth's checks for what would crash it.

    llama.cpp's parser prints its error, and the whole grammar, on the C stderr: that is caught
    and its first line becomes the one-line error.
    """
    from .grammars import check_grammar, check_token_references

    check_token_references(check_grammar(text), model.n_vocab)
    with _c_stderr_captured() as captured:
        grammar = lib.llama_sampler_init_grammar(model.vocab, text.encode(), b"root")
    if not grammar:
        on_error()
        said = [line.split("error parsing grammar:", 1)[-1].strip() for line in captured if "error" in line]
        raise UsageError("the grammar does not parse" + (f": {said[0][:160]}" if said else " (llama.cpp rejected it)"))
    return grammar


@contextlib.contextmanager
def _c_stderr_captured():
    """Collect what C code writes to file descriptor 2 meanwhile (a list of lines, filled at exit)."""
    import tempfile

    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read(1 << 16).decode("utf-8", "replace").splitlines()


def json_schema_grammar(schema_text: str) -> str:
    """GBNF for a JSON schema, via llama-cpp-python's converter; a bad schema is a one-line UsageError."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from .grammars import check_schema

    try:
        check_schema(json.loads(schema_text))
        return json_schema_to_gbnf(schema_text)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter says "unsupported" with any exception
        # (AssertionError for an unknown type, AttributeError for a non-object, ValueError for a
        # remote $ref, RecursionError for deep nesting): each means this schema cannot be used.
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"invalid JSON schema: {said[:160]}") from None


# -- quantizing (llama_model_quantize) ---------------------------------------------------------


@dataclass(frozen=True)
class QuantizeProgress:
    done: int
    total: int
    tensor: str


_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def quantize_gguf(src: str | Path, dst: str | Path, type_name: str, threads: int = 2,
                  imatrix: dict[str, "object"] | None = None, allow_requantize: bool = False,
                  on_progress: Callable[[QuantizeProgress], None] | None = None) -> None:
    """llama_model_quantize(src -> dst). `imatrix`: tensor name -> float32 importance array.
    Progress comes from llama.cpp's per-tensor log lines."""
    from .gguf_file import FILE_TYPES

    lib = _llama()
    lib.llama_backend_init()
    ftype = FILE_TYPES.get(type_name.upper())
    if ftype is None:
        raise ConversionError(f"unknown quant type {type_name!r}", hint="valid: " + ", ".join(FILE_TYPES))
    params = lib.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    keep_alive = _attach_imatrix(lib, params, imatrix) if imatrix else None

    def on_log(level: int, text: bytes) -> None:
        match = _TENSOR_LINE.search(text)
        if match and on_progress:
            on_progress(QuantizeProgress(int(match[1]), int(match[2]), match[3].decode(errors="replace")))

    set_log_handler(on_log)
    try:
        status = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        set_llama_logging(False)
    del keep_alive
    raise_deferred_interrupt()
    if status != 0:
        raise RuntimeFailure(f"llama.cpp failed to quantize {Path(src).name} to {type_name}",
                             hint="is the input a valid F32/F16/BF16 GGUF and is there disk space?")


def _attach_imatrix(lib, params, imatrix: dict) -> list:
    import numpy as np

    arrays = [(name.encode(), np.ascontiguousarray(values, dtype=np.float32)) for name, values in imatrix.items()]
    entries = (lib.llama_model_imatrix_data * (len(arrays) + 1))()
    for i, (name, values) in enumerate(arrays):
        entries[i].name = name
        entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = values.size
    params.imatrix = ctypes.cast(entries, ctypes.POINTER(lib.llama_model_imatrix_data))
    return [arrays, entries]


class Engine:
    """A loaded model with one context: the object every command generates through."""

    def __init__(self, path: str | Path, config: ContextConfig, verbose: bool = False, vocab_only: bool = False,
                 prompt_only: bool = False):
        set_llama_logging(verbose)
        start = time.perf_counter()
        self.path = Path(path)
        self.config = config
        self.ctx = self.batch = None
        self.model = LlamaModel(self.path, config.n_gpu_layers, vocab_only, prompt_only)
        if not vocab_only:  # the vocabulary alone: tokenize and detokenize, nothing to decode with
            try:
                self.ctx = LlamaContext(self.model, config)
                self.batch = TokenBatch(config.n_batch, config.n_seq_max)
            except BaseException:
                self.close()
                raise
        self.load_s = time.perf_counter() - start
        raise_deferred_interrupt()
        # Tokens whose KV is held per sequence id, so a later request can reuse a prefix.
        self.cached: dict[int, list[int]] = {}

    @property
    def n_ctx(self) -> int:
        return self.ctx.n_ctx

    @property
    def n_ctx_seq(self) -> int:
        return self.ctx.n_ctx_seq

    def reconfigure(self, config: ContextConfig) -> None:
        """A new context (and KV cache) for the loaded model: cheap, the weights stay."""
        self.batch.close()
        self.ctx.close()
        self.cached.clear()
        self.config = config
        self.ctx = LlamaContext(self.model, config)
        self.batch = TokenBatch(config.n_batch, config.n_seq_max)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=True)

    def sampler(self, params: SamplingParams, seed: int, draw: bool = True) -> Sampler:
        return Sampler(self.model, params, seed, draw)

    def close(self) -> None:
        for part in ("batch", "ctx", "model"):
            owner = getattr(self, part, None)
            if owner is not None:
                owner.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
