"""Dask backend: propagation chunks and k-NN row blocks run on a dask.distributed cluster.

The client (this process) keeps the pipeline and every small step; workers run
the two loops that dominate the cost, with the same code as the local backend:

* propagation: each stage's sparse graph is scattered to every worker once;
  each task receives one starting block (nodes x up to 64 columns) with its
  observed mask, runs :func:`sccr._engine.propagation.propagate_block` (the numba
  kernel) and returns the propagated block, which the client stores;
* exact k-NN: the matrix is scattered to every worker once; each worker derives
  its row-normalised copy on first use, and each task ranks one block of rows
  with :func:`sccr._engine.graph.block_top` (every row's full float32 row of cosines,
  independent blocks; the local search computes each pair once instead, see
  :func:`sccr._engine.graph.symmetric_top`, and takes the same candidates).

At most two tasks per worker thread are in flight, so the client holds a
bounded number of blocks whatever the number of chunks. Results equal the local
backend's: the same propagation kernel, and the same candidates ranked the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import InputError
from .._options import resolve_n_jobs
from .graph import ExactCosine, _row_normalised, block_top, cosine_block, similarity_block_rows
from .propagation import propagate_block

#: Tasks in flight per worker thread: one running, one queued behind it.
TASKS_PER_THREAD = 2

_INSTALL_HINT = "backend='dask' needs dask.distributed: pip install 'sccr[dask]'"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InputError(_INSTALL_HINT) from None
    return distributed


class _RowSearch:
    """What a worker needs to rank rows of ``M``: shipped as ``M`` alone, prepared there once."""

    def __init__(self, M: np.ndarray | sp.csr_matrix) -> None:
        self.M = M
        self._lock = threading.Lock()
        self._prepared: tuple[Any, ExactCosine] | None = None

    def __getstate__(self) -> dict:
        return {"M": self.M}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["M"])

    def prepared(self) -> tuple[Any, ExactCosine]:
        """Row-normalised ``M`` and its exact-cosine function, built on the first call."""
        with self._lock:
            if self._prepared is None:
                self._prepared = (_row_normalised(self.M), ExactCosine(self.M))
            return self._prepared


def _propagate_task(A: sp.csr_matrix, block: tuple, n_iter: int, hard: bool, beta: float) -> np.ndarray:
    x0, observed = block
    return propagate_block(A, x0, observed, n_iter=n_iter, hard=hard, beta=beta)


def _search_task(search: _RowSearch, start: int, stop: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    normalised, exact = search.prepared()
    return block_top(start, cosine_block(normalised, start, stop), m, exact=exact)


class DaskExecutor:
    """Runs the chunk loops of :mod:`sccr` on the workers of a ``distributed.Client``.

    Parameters
    ----------
    client
        A connected client; its cluster must have at least one worker.
    """

    def __init__(self, client) -> None:
        self.client = client
        self.address = client.scheduler.address
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise InputError(
                f"the dask cluster at {self.address} has no workers; start some first "
                "(e.g. cluster.scale(n), then client.wait_for_workers(n))"
            )
        self.in_flight = TASKS_PER_THREAD * threads

    def _map(
        self, shared: Any, task: Callable, jobs: Iterable[tuple], on_result: Callable[[int, Any], None]
    ) -> Iterator[None]:
        """Run ``task(shared, *job)`` for every job on the workers; ``on_result(i, value)`` for each.

        ``shared`` goes to every worker once. Jobs are drawn lazily, at most
        ``self.in_flight`` at a time; yields after each result is handled.
        """
        distributed = _distributed()
        client = self.client
        shared_future = client.scatter(shared, broadcast=True, hash=False)
        jobs = enumerate(jobs)
        index: dict[str, int] = {}
        running = distributed.as_completed(loop=client.loop)

        def submit(i: int, job: tuple) -> None:
            future = client.submit(task, shared_future, *job, pure=False)
            index[future.key] = i
            running.add(future)

        try:
            for i, job in islice(jobs, self.in_flight):
                submit(i, job)
            for future in running:
                on_result(index.pop(future.key), future.result())
                del future  # lets the worker drop the result now, not at the next completion
                for i, job in islice(jobs, 1):
                    submit(i, job)
                yield
        finally:
            client.cancel([shared_future, *running.futures])

    def propagate(self, A, n_chunks, load, store, *, n_iter, hard, beta) -> Iterator[None]:
        """See :meth:`sccr._engine.execution.RemoteExecutor.propagate`."""
        blocks = (self.client.scatter([load(i)], hash=False)[0] for i in range(n_chunks))
        jobs = ((block, n_iter, hard, beta) for block in blocks)
        yield from self._map(A, _propagate_task, jobs, store)

    def top_neighbours(self, M, n_neighbours) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`sccr._engine.execution.RemoteExecutor.top_neighbours`."""
        n = M.shape[0]
        m = min(n_neighbours, n)
        block = similarity_block_rows(n)
        starts = range(0, n, block)
        indices = np.empty((n, m), dtype=np.int64)
        values = np.empty((n, m), dtype=np.float32)

        def store(i: int, top: tuple[np.ndarray, np.ndarray]) -> None:
            rows = slice(starts[i], starts[i] + block)
            indices[rows], values[rows] = top

        jobs = ((start, start + block, m) for start in starts)
        for _ in self._map(_RowSearch(M), _search_task, jobs, store):
            pass
        return indices, values


def resolve_executor(client=None) -> DaskExecutor:
    """An executor on ``client``, or on the active client."""
    distributed = _distributed()
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:
            raise InputError(
                "backend='dask' found no active dask.distributed Client; pass client=, or create "
                "one first (distributed.Client('tcp://scheduler:8786') or distributed.Client(LocalCluster()))"
            ) from None
    if client.status != "running":
        raise InputError(f"the dask client is {client.status}, not running; pass a connected client")
    return DaskExecutor(client)


@contextmanager
def connect(address: str | None, *, n_workers: int | None = None) -> Iterator[Any]:
    """A client of the scheduler at ``address``, or of a new local cluster when ``address`` is None.

    The local cluster has ``n_workers`` single-threaded worker processes (default:
    one per available core). Both are closed on exit.
    """
    distributed = _distributed()
    if address is None:
        with (
            distributed.LocalCluster(
                n_workers=resolve_n_jobs(n_workers), threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(address)
    except (OSError, ValueError, TypeError) as err:  # refused, timed out, malformed address
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"cannot connect to the dask scheduler at {address!r} ({reason}); check the address "
            "(e.g. tcp://host:8786) and that the scheduler is running"
        ) from None
    with client:
        yield client
