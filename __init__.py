"""hearth: run language models on your own machine.

The public API (see README, "Python API"):

    import hearth
    with hearth.load("default") as model:
        print(model.generate("Say hi", max_tokens=16, temperature=0).text)

Names load on first use, so `import hearth` (and `hearth --help`) stays fast.
"""

from .errors import (BadModelFileError, ContextOverflowError, ConversionError, DiskSpaceError, DoesNotFitError,
                     HearthError, HubError, InputFormatError, IntegrityError, ModelNotFoundError, RuntimeFailure,
                     UsageError)

__version__ = "0.1.0"

_LAZY = {
    "load": "api", "Model": "api", "Completion": "api", "Usage": "api",
    "GenerationOptions": "runtime.options",
    "pull": "model_files", "convert": "model_files", "quantize": "model_files",
    "resolve_model": "references",
}

__all__ = sorted([*_LAZY, "__version__", "BadModelFileError", "ContextOverflowError", "ConversionError",
                  "DiskSpaceError", "DoesNotFitError", "HearthError", "HubError", "InputFormatError",
                  "IntegrityError", "ModelNotFoundError", "RuntimeFailure", "UsageError"])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hearth' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
