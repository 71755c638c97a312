"""Preprocessing (``sccr.pp``)."""

from .._preprocess import count_variance, preprocess_paper

__all__ = ["count_variance", "preprocess_paper"]
