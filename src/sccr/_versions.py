"""Versions recorded with every result."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sccr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_PACKAGES = ("sccr", "numpy", "scipy", "numba", "anndata", "scikit-learn")


def versions() -> dict[str, str]:
    """Python and the versions of the packages that change results."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
