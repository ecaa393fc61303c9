"""The engine: the only module that imports llama_cpp (everything llama.cpp goes through here)."""

from __future__ import annotations

import functools


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
