"""Array API in the scikit-learn estimator contract."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, clone

from ._dask import DaskExecutor, resolve_executor
from ._executor import executing
from ._graph import resolve_knn
from ._memory import plan, plan_out_of_core
from ._pipeline import Params, run
from ._store import SliceStore, Workspace
from ._validation import ValueSummary, canonical, check_expression, check_params, check_scratch_dir


class _Prepared(NamedTuple):
    X: np.ndarray | sp.csr_matrix | SliceStore
    params: Params
    out_of_core: bool
    input_on_disk: bool
    executor: DaskExecutor | None


def _stream_into(stored, store: SliceStore, k: int, k_gene: int | None) -> SliceStore:
    """Copy a stored matrix (``sccr._io.StoredMatrix``) into ``store`` block by block, checking it on the way.

    The checks and their messages are those of :func:`~sccr._validation.check_expression`.
    """
    summary = ValueSummary(stored.shape)
    for row, col, block in stored.blocks(width=store.width):
        block = canonical(block) if sp.issparse(block) else block
        summary.add(block, row, col)
        if summary.n_nonfinite or summary.minimum < 0:
            continue  # refused below; read on only to count the bad values
        dense = block.toarray() if sp.issparse(block) else block
        if stored.format == "csc":
            store.write_columns(col, dense)
        else:
            store.write_rows(row, dense)
    summary.check_expression(stored.shape, k, k_gene)
    return store


class SCCR(TransformerMixin, BaseEstimator):
    """scCR imputation of a cells x genes matrix (numpy array or scipy sparse).

    The options are those of :func:`sccr.impute`. Imputation is transductive:
    :meth:`fit_transform` returns the imputed matrix of the data it was fitted on.

    Attributes
    ----------
    imputed_ : numpy.ndarray
        The imputed matrix, cells x genes, float32.
    cell_graph_ : scipy.sparse.csr_matrix
        The final cell graph (row-stochastic), cells x cells.
    gene_graph_ : scipy.sparse.csr_matrix or None
        The learned gene-gene graph, genes x genes: signed for ``method="sccr"``
        (associating > 0, dissociating < 0), ``None`` for ``"scfp"``.
    timings_ : dict
        Seconds spent in each stage.
    n_jobs_ : int
        Threads used by the stages that run locally.
    knn_used_ : str
        The neighbour search the cell graphs used: ``"exact"`` or ``"approx"``.
    out_of_core_ : bool
        Whether the intermediate matrices were kept in scratch files (see ``memory_budget``).
    input_on_disk_ : bool
        Whether the input, read from a file (:func:`sccr.impute_file`), was streamed
        into a scratch file instead of memory (only when nothing else fits).
    scheduler_ : str or None
        Address of the dask scheduler that ran the chunk loops (``backend="dask"``).
    n_features_in_ : int
        Number of genes seen in :meth:`fit`.
    """

    def __init__(
        self,
        *,
        method: str = "sccr",
        k: int = 15,
        k_gene: int = 2,
        n_iter: int = 40,
        alpha: float = 0.05,
        beta: float = 0.99,
        gamma: float = 0.01,
        sym_final: bool = True,
        knn: str = "auto",
        random_state: int | None = 0,
        n_jobs: int | None = None,
        progress: bool | None = None,
        backend: str = "local",
        client=None,
        memory_budget: int | str | None = None,
        scratch_dir: str | None = None,
    ) -> None:
        self.method = method
        self.k = k
        self.k_gene = k_gene
        self.n_iter = n_iter
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.sym_final = sym_final
        self.knn = knn
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.progress = progress
        self.backend = backend
        self.client = client
        self.memory_budget = memory_budget
        self.scratch_dir = scratch_dir

    def __sklearn_clone__(self) -> SCCR:
        """scikit-learn's ``clone``, sharing ``client``: a live connection cannot be copied."""
        params = self.get_params(deep=False)
        client = params.pop("client")
        return type(self)(**{name: clone(value, safe=False) for name, value in params.items()}, client=client)

    def fit(self, X, y=None) -> SCCR:
        """Impute ``X`` (cells x genes, log-normalised, non-negative).

        Intermediate matrices go to scratch files when only that fits in
        ``memory_budget``; a run that cannot fit either way is refused
        (:class:`~sccr.InputError`) before it starts (``SCCR_SKIP_MEMORY_CHECK=1``
        skips that check).
        """
        return self._run(self._prepare(X))

    def _prepare(self, X, *, output_in_memory: bool = True, workspace: Workspace | None = None) -> _Prepared:
        """Validate the options and ``X`` and plan the memory, before any work.

        ``X`` may also be a matrix still in a file (``sccr._io.StoredMatrix``, with
        ``workspace``): it is read into memory, or streamed into a scratch file of
        ``workspace`` and checked block by block when only that fits.
        """
        params = check_params(
            method=self.method, k=self.k, k_gene=self.k_gene, n_iter=self.n_iter,
            alpha=self.alpha, beta=self.beta, gamma=self.gamma, sym_final=self.sym_final,
            knn=self.knn, n_jobs=self.n_jobs, progress=self.progress, random_state=self.random_state,
        )
        check_scratch_dir(self.scratch_dir)
        k_gene = None if params.method == "scfp" else params.k_gene
        if hasattr(X, "blocks") and hasattr(X, "in_memory_bytes"):  # still in its file
            out_of_core, input_on_disk = plan(
                X.shape, X.nnz, params, memory_budget=self.memory_budget,
                output_in_memory=output_in_memory, input_bytes=X.in_memory_bytes(),
            )
            if input_on_disk:
                workspace.out_of_core = True
                X = _stream_into(X, workspace.new("X", X.shape, params.chunk), params.k, k_gene)
            else:
                X = check_expression(X.read(), params.k, k_gene=k_gene)
        else:
            X = check_expression(X, params.k, k_gene=k_gene)
            out_of_core = plan_out_of_core(X, params, memory_budget=self.memory_budget, output_in_memory=output_in_memory)
            input_on_disk = False
        return _Prepared(X, params, out_of_core, input_on_disk, resolve_executor(self.backend, self.client))

    def _run(self, prepared: _Prepared, out: SliceStore | None = None, workspace: Workspace | None = None) -> SCCR:
        """Impute a prepared input, writing into ``out`` (e.g. a dataset of the output file) if given.

        ``workspace``: the one the input was prepared in (default: a new one, closed at the end).
        """
        X, params, executor = prepared.X, prepared.params, prepared.executor
        ws = Workspace(scratch_dir=self.scratch_dir) if workspace is None else workspace
        ws.out_of_core = prepared.out_of_core
        with executing(executor), ws:
            result = run(X, params, workspace=ws, out=out)
        self.imputed_ = result.imputed
        self.cell_graph_ = result.cell_graph
        self.gene_graph_ = result.gene_graph
        self.timings_ = result.timings
        self.n_jobs_ = params.n_jobs
        self.knn_used_ = resolve_knn(params.knn, X.shape[0])
        self.out_of_core_ = prepared.out_of_core
        self.input_on_disk_ = prepared.input_on_disk
        self.scheduler_ = None if executor is None else executor.address
        self.n_features_in_ = int(X.shape[1])
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Impute ``X`` and return the imputed matrix (float32 ndarray)."""
        return self.fit(X).imputed_
