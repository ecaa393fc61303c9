"""Offline llama.cpp work: quantizing GGUF files and scoring whole token sequences.

Besides `runtime/engine.py` (interactive generation), this is the only module that imports
llama_cpp. It drives the low-level C API directly: `hearth quantize` calls
llama_model_quantize; `hearth quality` and the conversion parity tests need the logits of
*every* position of a sequence, which the high-level API does not expose cheaply.

Each C pointer lives in a small owning class freed deterministically (`with` or `close()`),
never left to the garbage collector: a model is hundreds of MB of mapped memory.
"""

from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BadModelFileError, ConversionError, RuntimeFailure
from .hardware import local_cpu_weight_repacking

# hearth's quant names -> llama_ftype values (llama.h).
QUANT_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_K_S": 16, "Q5_0": 8,
    "Q4_K_M": 15, "Q4_K_S": 14, "Q4_0": 2, "Q4_1": 3, "IQ4_XS": 30, "IQ4_NL": 25,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q3_K_S": 11, "Q2_K": 10,
}

_log_callbacks: list = []  # C keeps only a raw pointer: the callbacks must stay referenced


@functools.lru_cache(maxsize=1)
def _llama():
    import llama_cpp

    _set_log(lambda level, text: None)
    llama_cpp.llama_backend_init()
    return llama_cpp


def _set_log(handler: Callable[[int, bytes], None]) -> None:
    import llama_cpp

    callback = llama_cpp.llama_log_callback(lambda level, text, data: handler(level, text or b""))
    _log_callbacks.append(callback)
    del _log_callbacks[:-2]  # the previous one may still be mid-call; keep it one more round
    llama_cpp.llama_log_set(callback, None)


# --------------------------------------------------------------------------------------------
# owning wrappers


class _Model:
    def __init__(self, path: Path, vocab_only: bool = False):
        from .gguf_checks import check_vocabulary
        from .gguf_file import read_gguf

        # llama.cpp trusts its input: a missing, truncated or damaged file is refused here first
        check_vocabulary(read_gguf(path))
        lib = _llama()
        params = lib.llama_model_default_params()
        params.vocab_only = vocab_only
        params.n_gpu_layers = 0
        params.use_extra_bufts = local_cpu_weight_repacking()
        self.ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise BadModelFileError(f"llama.cpp could not load {path}", hint="is it a complete GGUF for a supported architecture?")
        self.vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    def close(self) -> None:
        if self.ptr:
            _llama().llama_model_free(self.ptr)
            self.ptr = None


class _Context:
    def __init__(self, model: _Model, n_ctx: int, threads: int):
        lib = _llama()
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = min(n_ctx, 512)
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        # F32 KV cache, no flash attention: scores are compared to 1e-3 against other runtimes.
        params.type_k = params.type_v = 0  # GGML_TYPE_F32
        params.flash_attn_type = 0  # LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ptr = lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise RuntimeFailure(f"llama.cpp could not create a {n_ctx}-token context")

    def close(self) -> None:
        if self.ptr:
            _llama().llama_free(self.ptr)
            self.ptr = None


class _Batch:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.raw = _llama().llama_batch_init(capacity, 0, 1)
        self._alive = True

    def fill(self, tokens: list[int], first_pos: int, want_logits: bool) -> None:
        b = self.raw
        b.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i] = token, first_pos + i, 1
            b.seq_id[i][0] = 0
            b.logits[i] = want_logits

    def close(self) -> None:
        if self._alive:
            _llama().llama_batch_free(self.raw)
            self._alive = False


# --------------------------------------------------------------------------------------------
# scoring


class OfflineModel:
    """A model with one context of `n_ctx` tokens, for logits of whole sequences.

    `logits(tokens)` evaluates in independent chunks of n_ctx tokens (the memory is cleared
    between chunks), like llama-perplexity. Use as a context manager.
    """

    def __init__(self, path: str | Path, n_ctx: int = 512, threads: int = 2, vocab_only: bool = False):
        self.path = Path(path)
        self.n_ctx = n_ctx
        self._model = _Model(self.path, vocab_only)
        self._ctx = self._batch = None
        if not vocab_only:
            try:
                self._ctx = _Context(self._model, n_ctx, threads)
                self._batch = _Batch(n_ctx)
            except BaseException:
                self.close()
                raise

    @property
    def n_vocab(self) -> int:
        return self._model.n_vocab

    def __enter__(self) -> "OfflineModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for part in (self._batch, self._ctx, self._model):
            if part is not None:
                part.close()

    @property
    def add_bos(self) -> bool:
        return bool(_llama().llama_vocab_get_add_bos(self._model.vocab))

    @property
    def bos_id(self) -> int:
        return int(_llama().llama_vocab_bos(self._model.vocab))

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        lib = _llama()
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (lib.llama_token * capacity)()
        n = lib.llama_tokenize(self._model.vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            raise RuntimeFailure(f"tokenization failed ({n})")
        return list(buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        lib = _llama()
        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for token in tokens:
            n = lib.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
            out += buf.raw[:max(n, 0)]
        return out.decode("utf-8", errors="replace")

    def _decode(self, tokens: list[int], first_pos: int):
        import numpy as np

        lib = _llama()
        self._batch.fill(tokens, first_pos, True)
        if lib.llama_decode(self._ctx.ptr, self._batch.raw) != 0:
            raise RuntimeFailure("llama_decode failed")
        rows = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        for i in range(len(tokens)):
            ptr = lib.llama_get_logits_ith(self._ctx.ptr, i)
            rows[i] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return rows

    def _clear(self) -> None:
        lib = _llama()
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx.ptr), True)

    def logits(self, tokens: list[int]):
        """float32 [len(tokens), n_vocab]: row i is the prediction after tokens[:i+1] (within its chunk)."""
        import numpy as np

        chunks = []
        for start in range(0, len(tokens), self.n_ctx):
            self._clear()
            chunks.append(self._decode(tokens[start:start + self.n_ctx], 0))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_vocab), np.float32)

    def greedy(self, prompt: list[int], n_new: int) -> list[int]:
        """Greedy continuation (argmax), enough to show a model loads and generates."""
        if len(prompt) + n_new > self.n_ctx:
            raise RuntimeFailure("prompt plus new tokens exceed the context")
        self._clear()
        last = self._decode(prompt, 0)[-1]
        out = []
        for step in range(n_new):
            token = int(last.argmax())
            out.append(token)
            last = self._decode([token], len(prompt) + step)[-1]
        return out


# --------------------------------------------------------------------------------------------
# quantizing


@dataclass(frozen=True)
class QuantizeProgress:
    done: int
    total: int
    tensor: str


_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def quantize_gguf(src: str | Path, dst: str | Path, type_name: str, threads: int = 2,
                  imatrix: dict[str, "object"] | None = None, allow_requantize: bool = False,
                  on_progress: Callable[[QuantizeProgress], None] | None = None) -> None:
    """llama_model_quantize(src -> dst). `imatrix`: tensor name -> float32 importance array."""
    lib = _llama()
    ftype = QUANT_TYPES.get(type_name.upper())
    if ftype is None:
        raise ConversionError(f"unknown quant type {type_name!r}", hint="valid: " + ", ".join(QUANT_TYPES))
    params = lib.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    keep_alive = _attach_imatrix(lib, params, imatrix) if imatrix else None

    def on_log(level: int, text: bytes) -> None:
        match = _TENSOR_LINE.search(text)
        if match and on_progress:
            on_progress(QuantizeProgress(int(match[1]), int(match[2]), match[3].decode(errors="replace")))

    _set_log(on_log)
    try:
        status = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        _set_log(lambda level, text: None)
    del keep_alive
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
