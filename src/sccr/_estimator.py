"""Array API in the scikit-learn estimator contract."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone

from ._memory import check_memory
from ._dask import resolve_executor
from ._executor import executing
from ._pipeline import run
from ._validation import check_expression, check_params


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

    def __sklearn_clone__(self) -> SCCR:
        """scikit-learn's ``clone``, sharing ``client``: a live connection cannot be copied."""
        params = self.get_params(deep=False)
        client = params.pop("client")
        return type(self)(**{name: clone(value, safe=False) for name, value in params.items()}, client=client)

    def fit(self, X, y=None) -> SCCR:
        """Impute ``X`` (cells x genes, log-normalised, non-negative).

        Refuses (:class:`~sccr.InputError`) a run estimated to need more memory than
        is available; set ``SCCR_SKIP_MEMORY_CHECK=1`` to skip that check.
        """
        params = check_params(
            method=self.method, k=self.k, k_gene=self.k_gene, n_iter=self.n_iter,
            alpha=self.alpha, beta=self.beta, gamma=self.gamma, sym_final=self.sym_final,
            knn=self.knn, n_jobs=self.n_jobs, progress=self.progress,
        )
        X = check_expression(X, params.k, k_gene=None if params.method == "scfp" else params.k_gene)
        check_memory(X, params)
        executor = resolve_executor(self.backend, self.client)
        with executing(executor):
            result = run(X, params)
        self.imputed_ = result.imputed
        self.cell_graph_ = result.cell_graph
        self.gene_graph_ = result.gene_graph
        self.timings_ = result.timings
        self.n_jobs_ = params.n_jobs
        self.scheduler_ = None if executor is None else executor.address
        self.n_features_in_ = int(result.imputed.shape[1])
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Impute ``X`` and return the imputed matrix (float32 ndarray)."""
        return self.fit(X).imputed_
