"""Tools (``sccr.tl``): imputation, and label-free scores, tuning, stability and null checks of an imputation."""

from .._anndata import impute
from ._diagnose import diagnose
from ._score import null_check, score
from ._stability import stability
from ._tune import tune

__all__ = ["diagnose", "impute", "null_check", "score", "stability", "tune"]
