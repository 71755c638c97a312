"""Tidy accessors (``sccr.get``): what an imputation learned, as data frames."""

from ._partners import gene_partners

__all__ = ["gene_partners"]
