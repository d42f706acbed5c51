"""taalasc: print a neural network onto a structured ASIC by drawing its top two masks.

The Python API (docs/api.md) is the one the command line runs::

    import taalasc
    result = taalasc.compile("model/", "out/", bits=4)
    print(result.report.value("design__die__area"))
    assert taalasc.verify("out/", "model/").passed

Every name below is imported on first use (module ``__getattr__``), so ``import taalasc``
costs no more than this file: the CLI starts fast, and a notebook pays only for what it calls.
"""

import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "compile": "taalasc.api", "verify": "taalasc.api", "estimate": "taalasc.api",
    "sweep": "taalasc.api", "quality": "taalasc.api", "diff_masks": "taalasc.api",
    "read_report": "taalasc.api", "sign_off": "taalasc.api", "load_base_array": "taalasc.config",
    "CompileResult": "taalasc.compile", "VerifyResult": "taalasc.verify",
    "SweepPoint": "taalasc.api", "DiffResult": "taalasc.api",
    "QualityResult": "taalasc.textquality", "PolicyQuality": "taalasc.textquality",
    "Report": "taalasc.report.metrics", "Metric": "taalasc.report.metrics",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'taalasc' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """The functions ``taalasc.compile`` and ``taalasc.verify`` share their names with the
    modules taalasc/compile.py and taalasc/verify.py. Importing such a module makes Python
    set it as an attribute of this package, which would hide the function; this keeps the
    function. ``from taalasc.compile import CompileOptions`` still reads the module."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
