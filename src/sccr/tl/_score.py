"""Label-free quality of one imputation setting: molecular cross-validation, masked-entry recovery, permutation null.

Molecular cross-validation (MCV; Batson, Royer and Webber 2019, "Molecular
cross-validation for single-cell RNA-seq"): every count is split binomially
into two halves, which are independent Poisson samples of the same cells when
the counts are Poisson. Half 1 is imputed; half 2 is what the imputation must
predict. docs/trust.md gives every formula.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._options import DEFAULTS as OPTION_DEFAULTS

#: Scoring strategies of :func:`score` and :func:`sccr.tl.tune`.
STRATEGIES = ("auto", "mcv", "mask")
#: Methods that can be scored: those of :func:`sccr.impute` and ``"none"`` (the input itself).
METHODS = ("sccr", "scfp", "scbfp", "none")
#: Keys of ``params``: the options of :func:`sccr.impute` that change its result.
PARAM_KEYS = ("k", "k_gene", "n_iter", "alpha", "beta", "gamma", "sym_final", "knn")
#: Options that apply to each method (``gamma``, ``alpha``, ``k_gene`` do not change scFP).
METHOD_KEYS = {
    "sccr": PARAM_KEYS,
    "scfp": ("k", "n_iter", "beta", "sym_final", "knn"),
    "scbfp": ("k", "k_gene", "n_iter", "beta", "sym_final", "knn"),
    "none": (),
}
#: Published defaults of :func:`sccr.impute` (from :class:`sccr._options.Options`).
DEFAULTS = {key: getattr(OPTION_DEFAULTS, key) for key in PARAM_KEYS}
#: Fraction of the molecules in the half that is imputed (Batson et al.'s ``p``): close to 1, so that the
#: loss measures denoising at nearly the depth of the data (the bias of a smaller ``p`` is towards more
#: smoothing), as in Batson et al.'s reference code (``data_split=0.9``); docs/trust.md says why.
DEFAULT_SPLIT = 0.9
#: Cells are dealt into this many groups (cell ``i`` into group ``i % N_GROUPS``) for the standard errors of
#: loss differences (:func:`paired_se`): the loss of each group is kept for every split.
N_GROUPS = 100
#: Smallest predicted count in the Poisson loss (a prediction of exactly 0 for an observed count has infinite loss).
POISSON_FLOOR = 1e-4
#: Bytes of scCR blends (step 4), and again of soft propagations (step 6), a :class:`Scorer` keeps so that
#: other ``beta`` and ``gamma`` need no whole run (the most recent of each is kept whatever its size).
CACHE_BYTES = 512 * 2**20


# ---------------------------------------------------------------------------------------------
# inputs


def check_method(method) -> str:
    """A method name accepted by :func:`score` (callables pass through)."""
    from .._errors import InputError

    if callable(method):
        return method
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    return method


def check_params(method, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` as a dict of imputation options, refusing keys that are not options of ``method``."""
    from .._errors import InputError

    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InputError(
            f"params must be a dict of imputation options such as {{'k': 10}}, got {type(params).__name__}"
        )
    unknown = [key for key in params if key not in PARAM_KEYS]
    if unknown:
        raise InputError(
            f"params has keys that are not imputation options: {', '.join(map(repr, unknown))}; "
            f"use only {', '.join(PARAM_KEYS)} (method, random_state and n_jobs are arguments of their own)"
        )
    if method == "none" and params:
        raise InputError(f"method='none' takes no params, got {', '.join(params)}; pass params=None")
    return dict(params)


def _whole_numbers(X) -> bool:
    import scipy.sparse as sp

    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return False
    finite = np.isfinite(values)
    return bool(finite.all() and (values >= 0).all() and np.all(values == np.round(values)) and values.max() > 1)


def resolve_counts(adata, *, layer: str | None, counts_layer: str | None) -> tuple[Any | None, str | None]:
    """The raw counts of ``adata`` and where they came from, or ``(None, None)``.

    In order: ``layers[counts_layer]``; the matrix itself (``X`` or ``layer``) when it
    holds only whole numbers; ``layers['counts']`` (what :func:`sccr.pp.preprocess_paper`
    keeps) when it has the shape of ``adata``.
    """
    from .._adata import get_matrix
    from .._errors import InputError

    if counts_layer is not None:
        if counts_layer not in adata.layers:
            known = ", ".join(map(repr, adata.layers.keys())) or "none"
            raise InputError(
                f"counts_layer {counts_layer!r} not found in adata.layers (available: {known}); "
                "pass the layer that holds the raw counts, or strategy='mask' to score without counts"
            )
        counts = adata.layers[counts_layer]
        if not _whole_numbers(counts):
            raise InputError(
                f"layers[{counts_layer!r}] does not hold raw counts (non-negative whole numbers); "
                "pass the layer of raw counts, or strategy='mask' to score without counts"
            )
        return counts, f"layers[{counts_layer!r}]"
    X = get_matrix(adata, layer)
    if _whole_numbers(X):
        return X, "X" if layer is None else f"layers[{layer!r}]"
    if (
        "counts" in adata.layers
        and adata.layers["counts"].shape == adata.shape
        and _whole_numbers(adata.layers["counts"])
    ):
        return adata.layers["counts"], "layers['counts']"
    return None, None


def resolve_strategy(strategy: str, counts) -> str:
    """``"mcv"`` or ``"mask"`` for ``strategy`` given the counts found (or ``None``)."""
    from .._errors import InputError

    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}; got {strategy!r}")
    if strategy == "auto":
        return "mcv" if counts is not None else "mask"
    if strategy == "mcv" and counts is None:
        raise InputError(
            "strategy='mcv' needs raw counts, and none were found (X is not whole numbers and there is no "
            "layers['counts']); pass counts_layer= naming the layer of raw counts (sccr.pp.preprocess_paper "
            "keeps them in layers['counts']), or use strategy='mask'"
        )
    return strategy


def as_int_counts(counts):
    """Counts as int64 (CSR when sparse), checked to be non-negative whole numbers."""
    import scipy.sparse as sp

    from .._errors import InputError

    if sp.issparse(counts):
        C = sp.csr_matrix(counts, copy=True)
        C.sum_duplicates()
        C.data = np.rint(C.data).astype(np.int64)
        C.eliminate_zeros()
    else:
        C = np.rint(np.asarray(counts)).astype(np.int64)
    values = C.data if sp.issparse(C) else C
    if values.size and values.min() < 0:
        raise InputError("the counts have negative values; pass raw counts (non-negative whole numbers)")
    return C


def expression(adata, *, layer: str | None):
    """The log-normalised matrix to impute: ``X`` (or ``layer``), normalised first when it holds counts."""
    from .._adata import get_matrix

    X = get_matrix(adata, layer)
    if _whole_numbers(X):
        return normalise_counts(as_int_counts(X))[0]
    return X


# ---------------------------------------------------------------------------------------------
# molecular cross-validation


def binomial_split(counts, p: float = 0.5, *, random_state: int | None = 0):
    """Split counts molecule by molecule: ``X1 ~ Binomial(X, p)``, ``X2 = X - X1``.

    Exact: ``X1 + X2 == X`` entry by entry, and ``E[X1] = p X``, ``E[X2] = (1 - p) X``.
    Sparse input gives CSR halves (int64) with the sparsity of the input or sparser.
    """
    import scipy.sparse as sp

    from .._options import _check_fraction

    p = _check_fraction("split", p)
    rng = np.random.default_rng(random_state)
    C = as_int_counts(counts)
    if sp.issparse(C):
        X1, X2 = C.copy(), C.copy()
        X1.data = rng.binomial(C.data, p)
        X2.data = C.data - X1.data
        X1.eliminate_zeros()
        X2.eliminate_zeros()
        return X1, X2
    X1 = rng.binomial(C, p)
    return X1, C - X1


def normalise_counts(counts):
    """The preprocessing of :func:`sccr.pp.preprocess_paper` without gene selection: median-total scaling, ``log1p``.

    Returns
    -------
    log_normalised, totals, median
        Float32 CSR ``log1p(X_ij * median / total_i)``, the cell totals, and their
        median (over the cells with counts; cells without counts stay zero).
    """
    import scipy.sparse as sp

    X = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    positive = totals[totals > 0]
    median = float(np.median(positive)) if positive.size else 1.0
    scale = np.divide(median, totals, out=np.zeros_like(totals), where=totals > 0)
    X.data *= np.repeat(scale, np.diff(X.indptr))
    np.log1p(X.data, out=X.data)
    return sp.csr_matrix(X, dtype=np.float32), totals, median


def expected_log1p(lam: np.ndarray) -> np.ndarray:
    """``E[log(1 + K)]`` for ``K ~ Poisson(lam)`` (exact sum below 100, third-order expansion above)."""
    from scipy.stats import poisson

    lam = np.asarray(lam, dtype=np.float64)
    out = np.empty_like(lam)
    small = lam < 100
    if small.any():
        k = np.arange(0, 250)
        pmf = poisson.pmf(k[None, :], lam[small][:, None])
        out[small] = pmf @ np.log1p(k)
    big = ~small
    if big.any():
        x = lam[big]
        out[big] = np.log1p(x) - x / (2 * (1 + x) ** 2) + x / (3 * (1 + x) ** 3)
    return out


#: Poisson means on which ``E[log1p(Poisson)]`` is tabulated for the corrections (0, then 1e-6 to 1e7).
_GRID = np.concatenate([[0.0], np.geomspace(1e-6, 1e7, 6000)])


@functools.lru_cache(maxsize=32)
def _curve(scale: float) -> np.ndarray:
    """``E[log1p(Poisson(scale * mu))]`` over :data:`_GRID` (computed once per scale)."""
    return expected_log1p(_GRID * scale)


def convert_log1p(values: np.ndarray, a: float, b: float) -> np.ndarray:
    """Batson et al.'s correction: an estimate of ``E[log1p(Poisson(a lam))]`` turned into ``E[log1p(Poisson(b lam))]``.

    Smoothing in log space estimates the mean of ``log1p`` of counts, not ``log1p`` of
    their mean, so a change of depth from ``a`` to ``b`` goes through the function
    ``f(mu) = E[log1p(Poisson(mu))]``: ``f(b lam)`` at the ``lam`` where ``f(a lam)``
    equals the value (monotone interpolation on a grid). ``a == b`` is the identity.
    """
    values = np.asarray(values)
    if a == b:
        return values
    return np.interp(np.maximum(values, 0), _curve(float(a)), _curve(float(b))).astype(np.float32)


def invert_log1p(values: np.ndarray) -> np.ndarray:
    """The Poisson mean ``mu`` with ``E[log1p(Poisson(mu))] = value`` (0 for values <= 0)."""
    return np.interp(np.maximum(np.asarray(values), 0), _curve(1.0), _GRID)


def _squared_change(block: np.ndarray, rows) -> float:
    """Sum of squared differences between a block of an imputation and the same rows (sparse) of its input."""
    return float(np.sum((block - rows.toarray()) ** 2, dtype=np.float64))


class _MCVData:
    """Both halves of one binomial split, normalised the way the data was."""

    #: Cells per block of the loss kernel (blocks run on ``n_jobs`` threads).
    BLOCK = 256

    def __init__(self, counts, p: float, random_state: int | None) -> None:
        import scipy.sparse as sp
        from scipy.special import gammaln

        self.p = float(p)
        X1, X2 = binomial_split(counts, p, random_state=random_state)
        self.input, self.totals1, self.median1 = normalise_counts(X1)
        self.input.sort_indices()
        self.target = normalise_counts(X2)[0]
        self.target.sort_indices()
        self.counts2 = sp.csr_matrix(X2, dtype=np.float64)
        self.counts2.sort_indices()
        if not (
            np.array_equal(self.target.indptr, self.counts2.indptr)
            and np.array_equal(self.target.indices, self.counts2.indices)
        ):
            raise AssertionError("the normalised half 2 lost or gained entries")  # normalise_counts keeps them
        self.log_factorials = float(np.sum(gammaln(self.counts2.data + 1.0)))  # the part of the loss no setting changes
        self.shape = self.target.shape

    def losses(self, imputed: np.ndarray, n_jobs: int = 1) -> dict[str, float]:
        """``mcv_mse`` (log-normalised space) and ``mcv_poisson`` (count scale) of an imputation of half 1."""
        return self.details(imputed, n_jobs)[0]

    def details(self, imputed: np.ndarray, n_jobs: int = 1) -> tuple[dict[str, float], np.ndarray, float]:
        """:meth:`losses`, the ``mcv_mse`` of each group of cells (:data:`N_GROUPS`), and ``change``.

        For the imputation ``v`` of half 1, entry by entry: ``mcv_mse`` averages
        ``(convert_log1p(v, p, 1 - p) - Y2)^2``; ``mcv_poisson`` averages ``mu - X2 log mu + log X2!``
        with ``mu = max(invert_log1p(v) * t1 / m1 * (1 - p) / p, POISSON_FLOOR)``; ``change`` is the
        mean of ``(v - Y1)^2``: how far the setting moves the data from no imputation (0 for ``"none"``).
        One pass of a compiled kernel (:mod:`sccr.tl._kernels`) per block of cells.
        """
        from concurrent.futures import ThreadPoolExecutor

        from ._kernels import _mcv_rows

        p, (n, g) = self.p, self.shape
        if imputed.shape != (n, g):
            raise ValueError(f"the imputation has shape {imputed.shape}, the split {(n, g)}")
        depth = self.totals1 / self.median1 * ((1.0 - p) / p)  # half-1 normalised means -> half-2 counts
        convert, invert = _tables(p)
        squares, poisson, change = np.empty(n), np.empty(n), np.empty(n)
        X1, Y2, C2 = self.input, self.target, self.counts2

        def block(start: int) -> None:
            stop = min(start + self.BLOCK, n)
            rows = np.ascontiguousarray(imputed[start:stop], dtype=np.float32)
            _mcv_rows(
                rows,
                rows.view(np.int32),
                X1.indptr[start : stop + 1],
                X1.indices,
                X1.data,
                Y2.indptr[start : stop + 1],
                Y2.indices,
                Y2.data,
                C2.data,
                depth[start:stop],
                POISSON_FLOOR,
                p == 1.0 - p,  # convert_log1p is the identity
                *convert.arrays(),
                *invert.arrays(),
                squares[start:stop],
                poisson[start:stop],
                change[start:stop],
            )

        starts = range(0, n, self.BLOCK)
        if n_jobs <= 1 or len(starts) == 1:
            for start in starts:
                block(start)
        else:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                list(pool.map(block, starts))
        n_groups = min(N_GROUPS, n)
        cells = np.arange(n) % n_groups
        group_squares = np.bincount(cells, weights=squares, minlength=n_groups)
        group_cells = np.bincount(cells, minlength=n_groups)
        losses = {
            "mcv_mse": float(squares.sum()) / (n * g),
            "mcv_poisson": (float(poisson.sum()) + self.log_factorials) / (n * g),
        }
        return losses, group_squares / (group_cells * g), float(change.sum()) / (n * g)


@functools.lru_cache(maxsize=8)
def _tables(p: float):
    """The kernel's tables of :func:`convert_log1p` (depth ``p`` to ``1 - p``) and :func:`invert_log1p`."""
    from ._kernels import Table

    return Table(_curve(p), _curve(1.0 - p)), Table(_curve(1.0), _GRID)


class _MaskData:
    """Observed entries held out: a uniform draw and a low-value-biased draw, imputed in one run."""

    def __init__(self, X, rate: float, random_state: int | None) -> None:
        import scipy.sparse as sp

        from .._evaluation import drop_entries, drop_entries_mnar

        seed = 0 if random_state is None else int(random_state)
        X = sp.csr_matrix(X, dtype=np.float32)
        half = rate / 2
        dropped, ru, cu = drop_entries(X, half, seed)
        n_left = dropped.nnz
        # the low-value-biased half is drawn among the entries still observed, as a fraction of them
        dropped, rm, cm = drop_entries_mnar(dropped, half * X.nnz / max(n_left, 1), seed + 1)
        self.input = dropped
        self.uniform = (ru, cu, np.asarray(X[ru, cu]).ravel())
        self.low = (rm, cm, np.asarray(X[rm, cm]).ravel())
        self.shape = X.shape

    def details(self, imputed: np.ndarray, n_jobs: int = 1) -> tuple[dict[str, float], None, float]:
        """:meth:`losses`, no group losses (the 1-SE rule of :func:`sccr.tl.tune` needs MCV), and ``change``."""
        n, g = self.shape
        change = sum(
            _squared_change(
                np.asarray(imputed[start : start + _MCVData.BLOCK], dtype=np.float32),
                self.input[start : start + _MCVData.BLOCK],
            )
            for start in range(0, n, _MCVData.BLOCK)
        )
        return self.losses(imputed), None, change / (n * g)

    def losses(self, imputed: np.ndarray) -> dict[str, float]:
        from .._evaluation import imputation_errors

        uniform = imputation_errors(imputed[self.uniform[0], self.uniform[1]], self.uniform[2])["rmse"]
        low = imputation_errors(imputed[self.low[0], self.low[1]], self.low[2])["rmse"]
        return {"mask_rmse": (uniform + low) / 2, "mask_rmse_uniform": uniform, "mask_rmse_low": low}


def impute_matrix(X, method, params: Mapping[str, Any], *, random_state: int | None, n_jobs: int | None) -> np.ndarray:
    """The imputed matrix of ``X`` (dense float32): ``X`` itself for ``"none"``, ``method(X)`` for a callable."""
    import scipy.sparse as sp

    if callable(method):
        return np.asarray(method(X), dtype=np.float32)
    if method == "none":
        return X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float32)
    from .._errors import InputWarning
    from .._estimator import SCCR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # genes or cells left empty by a split or mask
        return SCCR(method=method, **params, random_state=random_state, n_jobs=n_jobs, progress=False).fit_transform(X)


def _remember(cache: OrderedDict, key: str, value, budget: int) -> None:
    """Keep ``value`` as the most recently used; drop the least recently used beyond ``budget`` bytes (never the last)."""

    def size(v) -> int:
        return sum(size(x) for x in v) if isinstance(v, tuple) else getattr(v, "nbytes", 0)

    cache[key] = value
    while len(cache) > 1 and sum(size(v) for v in cache.values()) > budget:
        cache.pop(next(iter(cache)))


class Scorer:
    """Scores many settings on prepared splits (or masks): the work shared by :func:`score` and :func:`sccr.tl.tune`.

    ``n_splits`` independent splits (the first with seed ``random_state``, the others derived from it) are
    prepared once; each setting is imputed on every split and its losses averaged.
    ``beta`` and ``gamma`` enter scCR only at its last step (ALGORITHM.md step 6:
    ``(1 - gamma) soft(A3, X, T, beta) + gamma B``), so settings that differ only in them share
    one run of steps 1-5: its graph ``A3`` and blend ``B`` are kept, up to :data:`CACHE_BYTES`
    (least recently used dropped first); each ``beta`` costs one propagation (kept likewise), and each
    ``gamma`` one blend.
    """

    def __init__(
        self,
        adata,
        *,
        strategy: str = "auto",
        layer: str | None = None,
        counts_layer: str | None = None,
        random_state: int | None = 0,
        n_jobs: int | None = None,
        split: float = DEFAULT_SPLIT,
        mask_rate: float = 0.1,
        n_splits: int = 1,
    ) -> None:
        from .._options import _check_fraction, _check_int, _check_seed, resolve_n_jobs

        self.random_state = _check_seed(random_state)
        self.n_splits = _check_int("n_splits", n_splits, 1)
        self.n_jobs = n_jobs
        self.threads = resolve_n_jobs(n_jobs)  # of the loss kernel
        seeds = [self.random_state] + [  # split 0 is the single split of n_splits=1; the others do not overlap seeds
            None
            if self.random_state is None
            else int(np.random.SeedSequence([self.random_state, i]).generate_state(1)[0])
            for i in range(1, self.n_splits)
        ]
        counts, source = (
            resolve_counts(adata, layer=layer, counts_layer=counts_layer) if strategy != "mask" else (None, None)
        )
        self.strategy = resolve_strategy(strategy, counts)
        self.counts_source = source
        if self.strategy == "mcv":
            split = _check_fraction("split", split)
            if not 0 < split < 1:
                from .._errors import InputError

                raise InputError(f"split must be strictly between 0 and 1, got {split}")
            self.splits = [_MCVData(counts, split, seed) for seed in seeds]
            self.config = {"strategy": "mcv", "split": split, "counts": source}
        else:
            mask_rate = _check_fraction("mask_rate", mask_rate)
            X = expression(adata, layer=layer)
            self.splits = [_MaskData(X, mask_rate, seed) for seed in seeds]
            self.config = {"strategy": "mask", "mask_rate": mask_rate}
        self.data = self.splits[0]
        self.config.update(random_state=self.random_state, shape=list(self.data.shape))
        if self.n_splits > 1:  # one split keeps the configuration (and checkpoints) of earlier versions
            self.config["n_splits"] = self.n_splits
        self.primary = "mcv_mse" if self.strategy == "mcv" else "mask_rmse"
        self.n_imputations = 0
        self.seconds = 0.0
        self.run_seconds: list[float] = []  # of each whole run
        self.n_denoisings = 0  # soft propagations of step 6 alone, on a kept graph
        #: scCR's final graph and blend by split and options other than beta and gamma, least recently used first
        self._cache: OrderedDict[str, tuple[Any, np.ndarray]] = OrderedDict()
        #: the soft propagation of step 6 by the key above and ``beta``, likewise
        self._soft: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_bytes = CACHE_BYTES

    def _impute(self, method, params: dict[str, Any], index: int) -> np.ndarray:
        start = time.perf_counter()
        out = impute_matrix(
            self.splits[index].input, method, params, random_state=self.random_state, n_jobs=self.n_jobs
        )
        if method != "none":
            self._count_run(time.perf_counter() - start)
        return out

    def _count_run(self, seconds: float) -> None:
        self.n_imputations += 1
        self.seconds += seconds
        self.run_seconds.append(seconds)

    def _blend_and_graph(self, params: dict[str, Any], index: int) -> tuple[Any, np.ndarray]:
        """scCR's final cell graph ``A3`` and blend ``B`` (steps 4-5) for ``params``: one run with ``gamma=1``."""
        from .._errors import InputWarning
        from .._estimator import SCCR

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)  # genes or cells left empty by a split
            model = SCCR(
                method="sccr", **params, gamma=1.0, random_state=self.random_state, n_jobs=self.n_jobs, progress=False
            ).fit(self.splits[index].input)
        self._count_run(time.perf_counter() - start)
        return model.cell_graph_, model.imputed_  # with gamma=1 the output is B, bit for bit

    def _denoised(
        self, key: str, index: int, graph, blend: np.ndarray, n_iter: int, beta: float, gamma: float
    ) -> np.ndarray:
        """scCR's step 6 on a kept graph and blend: the soft propagation (kept per ``beta``), then the blend."""
        from .._engine import blend_into, soft_propagate

        start = time.perf_counter()
        soft_key = json.dumps([key, beta])
        soft = self._soft.pop(soft_key, None)
        if soft is None:
            soft = soft_propagate(graph, self.splits[index].input, n_iter=n_iter, beta=beta, n_jobs=self.threads)
            self.n_denoisings += 1
        _remember(self._soft, soft_key, soft, self.cache_bytes)
        out = blend_into(soft.copy(), gamma, blend)
        self.seconds += time.perf_counter() - start
        return out

    def imputed(self, method, params: Mapping[str, Any], index: int = 0) -> np.ndarray:
        """The imputation of the prepared input of split ``index``.

        scCR settings that differ only in ``beta`` and ``gamma`` share everything before the last
        propagation (ALGORITHM.md steps 1-5): that run is made once, with ``gamma=1`` (whose output
        is the blend ``B``), and kept with its final graph; each ``beta`` repeats only the soft
        propagation of step 6 (kept too), and each ``gamma`` only its blend, with the same kernel
        and the same arithmetic as a whole run (the same bits; tested).
        """
        params = dict(params)
        if callable(method) or method != "sccr":
            return self._impute(method, params, index)
        beta = float(params.pop("beta", DEFAULTS["beta"]))
        gamma = float(params.pop("gamma", DEFAULTS["gamma"]))
        key = json.dumps([index, sorted(params.items())])
        kept = self._cache.pop(key, None)
        if kept is None:
            kept = self._blend_and_graph(params, index)
        _remember(self._cache, key, kept, self.cache_bytes)
        graph, blend = kept
        return self._denoised(key, index, graph, blend, int(params.get("n_iter", DEFAULTS["n_iter"])), beta, gamma)

    def evaluate(self, method, params: Mapping[str, Any] | None = None, splits=None) -> dict[str, Any]:
        """Scores of one setting, averaged over the splits (``splits``: the indices to score, default all).

        ``score`` (the primary loss, lower is better), every loss of the strategy,
        ``change`` (mean squared difference between imputation and input: 0 for no
        imputation), ``splits`` (the indices scored), ``score_splits``, ``loss_splits`` and
        ``change_splits`` (per split, in that order) and ``cell_groups`` (MCV: the ``mcv_mse``
        of each group of cells, one list per split; ``None`` for masks), from which
        :func:`paired_se` computes standard errors. :meth:`combine` joins two evaluations.
        """
        method = check_method(method)
        params = check_params(method, params)
        indices = list(range(len(self.splits)) if splits is None else splits)
        per_split, groups, changes = [], [], []
        for index in indices:
            losses, group_losses, change = self.splits[index].details(self.imputed(method, params, index), self.threads)
            per_split.append(losses)
            groups.append(group_losses)
            changes.append(change)
        return self._summary(
            indices,
            {key: [s[key] for s in per_split] for key in per_split[0]},
            changes,
            None if groups[0] is None else [g.tolist() for g in groups],
        )

    def _summary(self, indices: list[int], loss_splits: dict[str, list], changes: list, groups) -> dict[str, Any]:
        losses = {key: float(np.mean(values)) for key, values in loss_splits.items()}
        return {
            "score": losses[self.primary],
            **losses,
            "change": float(np.mean(changes)),
            "splits": list(indices),
            "score_splits": list(loss_splits[self.primary]),
            "loss_splits": loss_splits,
            "change_splits": list(changes),
            "cell_groups": groups,
        }

    def combine(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        """One evaluation from two of the same setting on different splits (in split order)."""
        indices = list(a["splits"]) + list(b["splits"])
        if len(set(indices)) != len(indices):
            raise ValueError("the evaluations share a split")
        order = np.argsort(indices, kind="stable")

        def joined(x, y):
            values = list(x) + list(y)
            return [values[i] for i in order]

        groups = None if a["cell_groups"] is None else joined(a["cell_groups"], b["cell_groups"])
        return self._summary(
            sorted(indices),
            {key: joined(a["loss_splits"][key], b["loss_splits"][key]) for key in a["loss_splits"]},
            joined(a["change_splits"], b["change_splits"]),
            groups,
        )


def check_memory(scorer: Scorer, *, k: int) -> None:
    """Refuse before any run when scoring does not fit in the memory available now.

    Scoring holds, beside one imputation of a split (:func:`sccr._engine.estimate_peak_bytes`, whose
    output is kept as scCR's blend for other ``beta`` and ``gamma``), a soft propagation and the
    imputation it scores.
    ``SCCR_SKIP_MEMORY_CHECK=1`` skips the check.
    """
    import os

    from .._engine import SKIP_ENV, available_bytes, estimate_peak_bytes, resolve_knn
    from .._errors import InputError
    from .._options import format_size

    budget = available_bytes()
    if os.environ.get(SKIP_ENV, "") == "1" or budget is None:
        return
    n, g = scorer.data.shape
    need = (
        estimate_peak_bytes(
            n,
            g,
            scorer.data.input.nnz,
            method="sccr",
            k=k,
            k_gene=DEFAULTS["k_gene"],
            n_jobs=scorer.threads,
            exact=resolve_knn(DEFAULTS["knn"], n) == "exact",
        )
        + 2 * 4 * n * g
    )
    if need > budget:
        raise InputError(
            f"scoring imputations of {n} cells x {g} genes needs about {format_size(need)} of memory (one imputation "
            f"of a split, a soft propagation and the imputation scored, all dense float32), but {format_size(budget)} "
            "is available; "
            "tune on fewer genes (the highly variable ones: adata[:, adata.var['highly_variable']]), use fewer "
            f"threads (n_jobs), or set {SKIP_ENV}=1 to try anyway"
        )


def paired_se(groups_a, groups_b) -> float:
    """Standard error of the difference in ``mcv_mse`` between two settings scored on the same splits.

    The loss of each group of cells (:data:`N_GROUPS`, cell ``i`` in group ``i % N_GROUPS``) is
    averaged over the splits; the difference between the two settings is taken group by group
    (paired: the noise of the held-out half, common to both, cancels), and its standard error
    is ``sd / sqrt(groups)``. ``nan`` when either has no group losses.
    """
    if groups_a is None or groups_b is None:
        return float("nan")
    a, b = np.asarray(groups_a, dtype=np.float64), np.asarray(groups_b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1] < 2:
        return float("nan")
    d = (a - b).reshape(-1, a.shape[-1]).mean(axis=0)
    return float(d.std(ddof=1) / np.sqrt(d.size))


def score(
    adata,
    *,
    method: str | Callable = "sccr",
    params: Mapping[str, Any] | None = None,
    strategy: str = "auto",
    layer: str | None = None,
    counts_layer: str | None = None,
    random_state: int | None = 0,
    n_jobs: int | None = None,
    split: float = DEFAULT_SPLIT,
    mask_rate: float = 0.1,
    null: bool = False,
    null_threshold: float = 0.5,
    n_splits: int = 1,
) -> dict[str, Any]:
    """Label-free quality of one imputation setting on this data (lower is better).

    Parameters
    ----------
    adata
        Cells x genes: log-normalised expression in ``X`` (or ``layer``), or raw counts there.
    method
        ``"sccr"``, ``"scfp"``, ``"scbfp"``, ``"none"`` (no imputation: the input itself is
        scored), or a function ``f(X) -> imputed`` of a log-normalised matrix.
    params
        Options of :func:`sccr.impute` (``k``, ``k_gene``, ``n_iter``, ``alpha``, ``beta``,
        ``gamma``, ``sym_final``, ``knn``); unset ones take their defaults.
    strategy
        ``"mcv"``: molecular cross-validation on raw counts. Each count is split,
        ``X1 ~ Binomial(X, split)``, ``X2 = X - X1``; each half is normalised as the data
        (cells scaled to the median total of that half, ``log1p``); half 1 is imputed
        (``Y1``) and compared with half 2 (``N2``): ``mcv_mse = mean((c(Y1) - N2)^2)`` over
        all entries, where ``c`` is Batson et al.'s depth correction from ``split`` to
        ``1 - split`` (:func:`convert_log1p`; the identity for ``split = 0.5``), and
        ``mcv_poisson = mean(mu - X2 log mu + log X2!)`` with the predicted counts
        ``mu = f^-1(Y1) * total1 / median1 * (1 - split) / split`` (``f^-1`` inverts
        ``E[log1p(Poisson)]``; floored at :data:`POISSON_FLOOR`). ``"mask"``: a fraction
        ``mask_rate`` of the observed entries is held out, half uniformly and half biased
        to low values (:func:`sccr._evaluation.drop_entries`, ``drop_entries_mnar``);
        ``mask_rmse`` is the mean of the RMSEs on each half. ``"auto"``: ``"mcv"`` when
        raw counts are found (``counts_layer``, whole numbers in the matrix, or
        ``layers['counts']``), else ``"mask"``.
    layer, counts_layer
        Where the expression and the raw counts are.
    random_state
        Seed of the split or mask, and of the imputation.
    n_jobs
        Threads of the imputation.
    split, mask_rate
        Fraction of the molecules in half 1 (default :data:`DEFAULT_SPLIT` = 0.9: the loss then
        measures denoising at nearly the depth of the data, so the amount of smoothing it
        chooses is nearly the one right for the data itself; 0.5 gives two halves of equal
        depth and chooses more smoothing, see docs/trust.md); fraction of the observed
        entries held out.
    null
        Also run :func:`null_check` with the same setting (result under ``"null"``).
    null_threshold
        Correlation threshold of the null check.
    n_splits
        Independent splits (or masks): the first with seed ``random_state``, the others seeded from it;
        the losses are their means, ``score_splits`` the score of each.

    Returns
    -------
    dict
        ``score`` (the primary loss: ``mcv_mse`` or ``mask_rmse``), every loss of the
        strategy, ``change`` (mean squared difference between the imputation and its input),
        ``score_splits``, ``strategy``, ``method``, ``params``, ``seconds`` and the split or mask settings.
    """
    method = check_method(method)
    params = check_params(method, params)
    start = time.perf_counter()
    scorer = Scorer(
        adata,
        strategy=strategy,
        layer=layer,
        counts_layer=counts_layer,
        random_state=random_state,
        n_jobs=n_jobs,
        split=split,
        mask_rate=mask_rate,
        n_splits=n_splits,
    )
    if isinstance(method, str) and method != "none":
        check_memory(scorer, k=int((params or {}).get("k", DEFAULTS["k"])))
    result = scorer.evaluate(method, params)
    for key in ("cell_groups", "splits", "loss_splits", "change_splits"):
        result.pop(key)
    result.update(
        method=method if isinstance(method, str) else getattr(method, "__name__", "callable"),
        params=params,
        **scorer.config,
        seconds=time.perf_counter() - start,
    )
    if null:
        if not isinstance(method, str):
            from .._errors import InputError

            raise InputError("null=True needs a method name, not a function; pass method='sccr', 'scfp' or 'scbfp'")
        result["null"] = null_check(
            adata,
            method=method,
            params=params,
            layer=layer,
            random_state=random_state,
            n_jobs=n_jobs,
            threshold=null_threshold,
            key_added=None,
        )
    return result


# ---------------------------------------------------------------------------------------------
# permutation null


def permute_genes(X, *, random_state: int | None = 0):
    """Each gene (column) shuffled independently across cells: marginals kept, gene-gene and cell structure destroyed."""
    import scipy.sparse as sp

    rng = np.random.default_rng(random_state)
    n = X.shape[0]
    if sp.issparse(X):
        C = sp.csc_matrix(X, dtype=np.float32, copy=True)
        C.sum_duplicates()
        rows = np.empty_like(C.indices)
        for j in range(C.shape[1]):
            lo, hi = C.indptr[j], C.indptr[j + 1]
            rows[lo:hi] = rng.choice(n, hi - lo, replace=False)
        C.indices = rows
        C.has_sorted_indices = False
        return sp.csr_matrix(C)
    X = np.array(X, dtype=np.float32)
    for j in range(X.shape[1]):
        X[:, j] = X[rng.permutation(n), j]
    return X


def _standardised(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    Z = M - M.mean(axis=0)
    norm = np.linalg.norm(Z, axis=0)
    return np.divide(Z, norm, out=np.zeros_like(Z), where=norm > 0)


def gene_correlations(M: np.ndarray) -> np.ndarray:
    """Pearson correlations between the columns of ``M`` (constant columns: 0)."""
    Z = _standardised(M)
    return np.clip(Z.T @ Z, -1.0, 1.0)


def _edge_correlations(Z: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows))
    for start in range(0, len(rows), 4096):
        r, c = rows[start : start + 4096], cols[start : start + 4096]
        out[start : start + 4096] = np.einsum("ij,ij->j", Z[:, r], Z[:, c])
    return out


def _pair_summary(C: np.ndarray, threshold: float, bins: np.ndarray) -> dict[str, Any]:
    upper = C[np.triu_indices_from(C, k=1)]
    return {
        "associating": int((upper > threshold).sum()),
        "dissociating": int((upper < -threshold).sum()),
        "histogram": np.histogram(upper, bins=bins)[0].tolist(),
        "quantiles": {str(q): float(np.quantile(upper, q)) for q in (0.001, 0.01, 0.5, 0.99, 0.999)}
        if upper.size
        else {},
    }


def _graph_edges(S) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import scipy.sparse as sp

    S = sp.coo_matrix(S)
    keep = S.row < S.col
    sign = np.sign(S.data[keep])
    # an edge kept by one gene only appears once in the upper triangle, or only in the lower one
    lower = S.row > S.col
    rows = np.concatenate([S.row[keep], S.col[lower]])
    cols = np.concatenate([S.col[keep], S.row[lower]])
    signs = np.concatenate([sign, np.sign(S.data[lower])])
    key = rows.astype(np.int64) * S.shape[0] + cols
    _, first = np.unique(key, return_index=True)
    return rows[first], cols[first], signs[first]


def null_check(
    adata,
    *,
    method: str = "sccr",
    params: Mapping[str, Any] | None = None,
    layer: str | None = None,
    random_state: int | None = 0,
    n_jobs: int | None = None,
    threshold: float = 0.5,
    max_genes: int = 2000,
    quantile: float = 0.99,
    real: tuple[np.ndarray, Any] | None = None,
    key_added: str | None = "sccr_null",
) -> dict[str, Any]:
    """Spurious structure: the same imputation on a permutation null (each gene shuffled across cells).

    The null keeps every gene's distribution of values and destroys gene-gene
    correlation and cell structure, so what imputation makes of it is structure it
    creates by itself. Reported: the gene pairs whose correlation after imputation is
    above ``threshold`` (associating) or below ``-threshold`` (dissociating), on the
    null and on the real data; the distributions of those correlations (histograms
    on 80 bins over [-1, 1]); and, for methods with a gene graph, which of its edges
    survive the null: an associating (dissociating) edge survives when the correlation
    of its two genes after imputation is above (below) the ``quantile`` (``1 - quantile``)
    quantile of the correlations of the same-sign edges of the gene graph built on the
    null (of all null pairs when the null graph has none of that sign).

    Parameters
    ----------
    adata, method, params, layer, random_state, n_jobs
        As in :func:`score` (``method`` a name other than ``"none"``).
    threshold
        Correlation threshold for counting pairs.
    max_genes
        Correlations over at most this many genes (the most variable of the input);
        edges are scored over all genes.
    quantile
        Null quantile an edge must exceed to survive.
    real
        ``(imputed, gene_graph)`` of a run of this setting on the real data, to save running it again.
    key_added
        The result is also stored in ``adata.uns[key_added]`` (``None``: not stored).

    Returns
    -------
    dict
        ``real`` and ``null``: pair counts, histogram, quantiles; ``edges``: per sign the
        number of edges and of survivors, with the thresholds used; ``bins``; ``threshold``.
    """
    from .._errors import InputError, InputWarning
    from .._estimator import SCCR

    method = check_method(method)
    if not isinstance(method, str) or method == "none":
        raise InputError(f"the null check needs an imputation method ('sccr', 'scfp' or 'scbfp'), got {method!r}")
    params = check_params(method, params)
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be between 0 and 1, got {threshold!r}")
    X = expression(adata, layer=layer)

    def run(M):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)
            model = SCCR(method=method, **params, random_state=random_state, n_jobs=n_jobs, progress=False).fit(M)
        return model.imputed_, model.gene_graph_

    start = time.perf_counter()
    imputed, graph = run(X) if real is None else real
    null_imputed, null_graph = run(permute_genes(X, random_state=random_state))
    genes = np.arange(X.shape[1])
    if len(genes) > max_genes:
        variance = np.asarray(imputed.var(axis=0))
        genes = np.sort(np.argsort(variance, kind="stable")[-max_genes:])
    bins = np.linspace(-1, 1, 81)
    out: dict[str, Any] = {
        "method": method,
        "params": params,
        "threshold": float(threshold),
        "quantile": float(quantile),
        "bins": bins.tolist(),
        "n_genes_correlated": len(genes),
        "real": _pair_summary(gene_correlations(imputed[:, genes]), threshold, bins),
        "null": _pair_summary(gene_correlations(null_imputed[:, genes]), threshold, bins),
    }
    if graph is not None and method in ("sccr", "scbfp"):
        rows, cols, signs = _graph_edges(graph)
        r_real = _edge_correlations(_standardised(imputed), rows, cols)
        nrows, ncols, nsigns = _graph_edges(null_graph)
        Z0 = _standardised(null_imputed)
        r_null = _edge_correlations(Z0, nrows, ncols)
        edges = {}
        for name, sign in (("associating", 1), ("dissociating", -1)):
            same = r_null[nsigns == sign]
            if same.size == 0:  # no edge of that sign on the null: compare with all null pairs
                upper = gene_correlations(null_imputed[:, genes])[np.triu_indices(len(genes), k=1)]
                same, reference = upper, "all null pairs"
            else:
                reference = "null gene-graph edges"
            cut = float(np.quantile(same, quantile)) if sign > 0 else float(np.quantile(same, 1 - quantile))
            mine = r_real[signs == sign]
            survive = mine > cut if sign > 0 else mine < cut
            edges[name] = {
                "n_edges": int(mine.size),
                "n_survive": int(survive.sum()),
                "null_edges": int((nsigns == sign).sum()),
                "cut": cut,
                "reference": reference,
                "median_r_real": float(np.median(mine)) if mine.size else float("nan"),
                "median_r_null": float(np.median(r_null[nsigns == sign])) if (nsigns == sign).any() else float("nan"),
            }
        out["edges"] = edges
    out["seconds"] = time.perf_counter() - start
    if key_added is not None:
        adata.uns[key_added] = out
    return out
