"""How the chunk loops run: threads, progress bars and, optionally, a remote executor, set once per run.

The engine installs an :class:`Execution` for the duration of a run with
:func:`executing`; the kernels (:mod:`.propagation`, :mod:`.graph`, :mod:`.ann`)
ask :func:`current` for the number of threads, for a progress bar, and for the
remote executor (:class:`sccr._engine.dask.DaskExecutor`) that runs their chunk
loops on a cluster, if any. Nothing threads ``n_jobs`` or ``progress`` through
the stages by hand. :func:`executing` also limits BLAS and numba to that many
threads, and restores the previous settings afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp


class RemoteExecutor(Protocol):
    """The two chunk loops a distributed backend implements (see :class:`sccr._engine.dask.DaskExecutor`)."""

    address: str

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
        """Propagate every chunk as :func:`~sccr._engine.propagation.propagate_chunks` does; yield after each store."""

    def top_neighbours(self, M: np.ndarray | sp.csr_matrix, n_neighbours: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine top-``n_neighbours`` of every row of float32 ``M``, as the local search gives."""


class _NoBar:
    """What a disabled progress bar does: nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass


@dataclass(frozen=True)
class Execution:
    """Threads, progress bars and remote executor of one run."""

    n_jobs: int = 1
    progress: bool = False
    remote: RemoteExecutor | None = None

    def bar(self, desc: str, total: int, unit: str = "block"):
        """A progress bar for one stage of ``total`` steps; kept on screen when done (a no-op when off)."""
        if not self.progress:
            return _NoBar()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=True)


_CURRENT: ContextVar[Execution] = ContextVar("sccr_execution", default=Execution())  # noqa: B039 (frozen, never mutated)


def current() -> Execution:
    """The execution installed by :func:`executing` (default: one thread, no bars, local)."""
    return _CURRENT.get()


@contextmanager
def executing(execution: Execution) -> Iterator[Execution]:
    """Run the block inside ``execution``: its threads for BLAS and numba, its bars, its remote executor.

    The previous thread settings are restored on exit.
    """
    import numba
    from threadpoolctl import threadpool_limits

    token = _CURRENT.set(execution)
    previous = numba.get_num_threads()
    numba.set_num_threads(min(execution.n_jobs, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=execution.n_jobs):
            yield execution
    finally:
        numba.set_num_threads(previous)
        _CURRENT.reset(token)
