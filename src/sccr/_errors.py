"""The exceptions and warnings sccr raises (a leaf module: it imports nothing of sccr)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class InputWarning(UserWarning):
    """Input that sccr can impute but that is probably not what the user meant.

    ``warnings.simplefilter("error", sccr.InputWarning)`` turns every such case into an error.
    """


class CountsWarning(InputWarning):
    """The matrix looks like raw counts where log-normalised expression is expected."""
