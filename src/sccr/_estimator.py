"""The array face: :class:`SCCR`, a scikit-learn transformer over the engine."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone

from ._engine import Result, prepare
from ._options import DEFAULTS, Options, with_options_doc


@with_options_doc
class SCCR(TransformerMixin, BaseEstimator):
    """scCR imputation of a cells x genes matrix (numpy array or scipy sparse), log-normalised and non-negative.

    Imputation is transductive: :meth:`fit_transform` returns the imputed matrix
    of the data it was fitted on (there is no ``transform`` of new data).

    Parameters
    ----------
    {options}

    Attributes
    ----------
    imputed_ : numpy.ndarray
        The imputed matrix, cells x genes, float32.
    cell_graph_ : scipy.sparse.csr_matrix
        The final cell graph (row-stochastic), cells x cells.
    gene_graph_ : scipy.sparse.csr_matrix or None
        The learned gene-gene graph, genes x genes: signed for ``method="sccr"``
        (associating > 0, dissociating < 0), ``None`` for ``"scfp"``.
    gene_correlations_ : scipy.sparse.csr_matrix or None
        scCR: the Pearson correlation (over the pre-imputation) of each gene's chosen partners.
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
        method: str = DEFAULTS.method,
        k: int = DEFAULTS.k,
        k_gene: int = DEFAULTS.k_gene,
        n_iter: int = DEFAULTS.n_iter,
        alpha: float = DEFAULTS.alpha,
        beta: float = DEFAULTS.beta,
        gamma: float = DEFAULTS.gamma,
        sym_final: bool = DEFAULTS.sym_final,
        knn: str = DEFAULTS.knn,
        random_state: int | None = DEFAULTS.random_state,
        n_jobs: int | None = DEFAULTS.n_jobs,
        progress: bool | None = DEFAULTS.progress,
        backend: str = DEFAULTS.backend,
        client=DEFAULTS.client,
        memory_budget: int | str | None = DEFAULTS.memory_budget,
        scratch_dir: str | None = DEFAULTS.scratch_dir,
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = False
        tags.input_tags.positive_only = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = False
        return tags

    def options(self) -> Options:
        """The validated :class:`~sccr._options.Options` of the current parameters."""
        return Options(**self.get_params(deep=False))

    def fit(self, X, y=None) -> SCCR:
        """Impute ``X`` (cells x genes, log-normalised, non-negative).

        Intermediate matrices go to scratch files when only that fits in
        ``memory_budget``; a run that cannot fit either way is refused
        (:class:`~sccr.InputError`) before it starts (``SCCR_SKIP_MEMORY_CHECK=1``
        skips that check).
        """
        with prepare(X, self.options()) as job:
            self._set_fitted(job.execute(), job.X)
        return self

    def _set_fitted(self, result: Result, X) -> None:
        """The fitted attributes from an engine result (``X``: the checked input)."""
        self.imputed_ = result.imputed
        self.cell_graph_ = result.cell_graph
        self.gene_graph_ = result.gene_graph
        self.gene_correlations_ = result.gene_correlations
        self.timings_ = result.timings
        decisions = result.decisions
        self.n_jobs_ = decisions.n_jobs
        self.knn_used_ = decisions.knn_used
        self.out_of_core_ = decisions.out_of_core
        self.input_on_disk_ = decisions.input_on_disk
        self.scheduler_ = decisions.scheduler
        self.n_features_in_ = int(X.shape[1])

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Impute ``X`` and return the imputed matrix (float32 ndarray)."""
        return self.fit(X).imputed_
