"""Where the chunk loops run: local threads, or an executor installed for one run.

:func:`sccr._propagation.propagate_chunks` and :func:`sccr._graph.knn_graph`
ask :func:`current_executor`; ``None`` (the default) means local threads. The
executor is set for the duration of a run with :func:`executing`, so every
stage of every method picks it up without the pipeline passing it around.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import numpy as np
import scipy.sparse as sp


class Executor(Protocol):
    """The two chunk loops a backend implements (see :class:`sccr._dask.DaskExecutor`)."""

    def propagate(
        self,
        A: sp.csr_matrix,
        n_chunks: int,
        load: Callable[[int], tuple[np.ndarray, np.ndarray | None]],
        store: Callable[[int, np.ndarray], None],
        *,
        n_iter: int,
        hard: bool,
        beta: float,
    ) -> Iterator[None]:
        """Propagate every chunk as :func:`~sccr._propagation.propagate_chunks` does; yield after each store."""

    def top_neighbours(self, M: np.ndarray | sp.csr_matrix, n_neighbours: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine top-``n_neighbours`` of every row of float32 ``M``, as the local search gives."""


_CURRENT: ContextVar[Executor | None] = ContextVar("sccr_executor", default=None)


def current_executor() -> Executor | None:
    """The executor installed by :func:`executing`, or ``None`` for local threads."""
    return _CURRENT.get()


@contextmanager
def executing(executor: Executor | None) -> Iterator[None]:
    """Run the chunk loops inside the ``with`` block on ``executor`` (``None``: locally)."""
    token = _CURRENT.set(executor)
    try:
        yield
    finally:
        _CURRENT.reset(token)
