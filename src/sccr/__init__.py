"""sccr: single-cell RNA-seq imputation with scCR (associating and dissociating gene-gene relationships).

The public surface, in scanpy's conventions:

- :func:`impute` (also ``sccr.tl.impute``) and :func:`impute_file`: AnnData in, AnnData out;
- :class:`SCCR`: the scikit-learn estimator over numpy / scipy matrices;
- ``sccr.pp`` (preprocessing), ``sccr.tl`` (tools), ``sccr.pl`` (plots), ``sccr.get`` (tidy accessors),
  ``sccr.datasets`` (the bundled data);
- :class:`InputError`, :class:`InputWarning`, :class:`CountsWarning`.

Everything is imported on first use, so that ``import sccr`` stays fast.
"""

from importlib import import_module

from ._errors import CountsWarning, InputError, InputWarning
from ._versions import __version__

#: Public name -> module that defines it (imported on first access).
_LAZY = {
    "SCCR": "._estimator",
    "impute": "._anndata",
    "impute_file": "._anndata",
    "benchmark": "._benchmark",
}
_SUBPACKAGES = ("datasets", "get", "pl", "pp", "tl")

__all__ = [
    "SCCR",
    "CountsWarning",
    "InputError",
    "InputWarning",
    "__version__",
    "benchmark",
    "datasets",
    "get",
    "impute",
    "impute_file",
    "pl",
    "pp",
    "tl",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'sccr' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
