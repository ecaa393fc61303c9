"""llama-cpp-python's own `Llama`, as benchmarks' side-by-side reference, safe on AMX CPUs.

`Llama` has no switch for llama.cpp's CPU "extra" weight buffers, whose AMX kernels segfault on
this project's Xeon VMs (see hearth.runtime.hardware.cpu_weight_repacking). Where hearth turns
them off, the reference must too — for safety, and so both sides run the same kernels.
"""

from __future__ import annotations


def reference_llama(path: str, **kwargs):
    import llama_cpp
    import llama_cpp.llama_cpp as low_level  # what `Llama` calls its model defaults through

    from hearth.runtime.hardware import local_cpu_weight_repacking

    defaults = low_level.llama_model_default_params
    if not local_cpu_weight_repacking():
        def without_extra_buffers():
            params = defaults()
            params.use_extra_bufts = False
            return params

        low_level.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(path, **kwargs)
    finally:
        low_level.llama_model_default_params = defaults
