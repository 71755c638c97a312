"""sccr: single-cell RNA-seq imputation with scCR (associating and dissociating gene-gene relationships)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sccr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from . import datasets, pp
from ._anndata import impute, impute_file
from ._benchmark import benchmark
from ._estimator import SCCR
from ._validation import CountsWarning, InputError, InputWarning

__all__ = [
    "SCCR", "CountsWarning", "InputError", "InputWarning", "datasets", "impute", "impute_file", "benchmark", "pp", "__version__",
]
