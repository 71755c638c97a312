"""Tools (``sccr.tl``): imputation and the analyses of its result."""

from .._anndata import impute

__all__ = ["impute"]
