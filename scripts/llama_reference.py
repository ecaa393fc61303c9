"""llama-cpp-python's own `Llama`, as benchmarks' side-by-side reference, safe on AMX CPUs.

`Llama` has no switch for llama.cpp's CPU "extra" weight buffers, whose AMX kernels segfault on
this project's Xeon VMs (see hearth.runtime.hardware.cpu_weight_buffers). The reference gets the
weight buffers hearth chooses (on AMX CPUs: repacked rows without AMX) — for safety, and so both
sides run the same kernels.
"""

from __future__ import annotations


def reference_llama(path: str, **kwargs):
    import llama_cpp
    import llama_cpp.llama_cpp as low_level  # what `Llama` calls its model defaults through

    from hearth.runtime.engine import apply_weight_buffers

    defaults = low_level.llama_model_default_params
    kept = []  # the repack overrides, alive until the model is loaded

    def as_hearth_loads():
        params = defaults()
        kept.append(apply_weight_buffers(params, path, kwargs.get("n_gpu_layers", 0)))
        return params

    low_level.llama_model_default_params = as_hearth_loads
    try:
        return llama_cpp.Llama(path, **kwargs)
    finally:
        low_level.llama_model_default_params = defaults
