"""Figures of the trust tools: score against parameters, stability per cell, null against real correlations.

matplotlib is imported inside each function; figures are made without pyplot
(``matplotlib.figure.Figure``) unless an ``ax`` is given, so no backend is chosen here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def _new_axes(ax, figsize=(5.0, 3.6)):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig, save: str | os.PathLike | None) -> None:
    if save is not None:
        fig.savefig(save, dpi=120)


def _tune_table(data, key: str):
    import pandas as pd

    from .._errors import InputError

    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "uns"):
        if key not in data.uns or "table" not in data.uns[key]:
            raise InputError(f"adata.uns[{key!r}] has no tuning table; run sccr.tl.tune(adata) first")
        return data.uns[key]["table"]
    raise InputError(f"expected an AnnData after sccr.tl.tune or the DataFrame it returns, got {type(data).__name__}")


def tune_curves(data, *, key: str = "sccr_tune", score: str = "score", save: str | os.PathLike | None = None):
    """Score against each option the tuning varied: every scored setting (dots), the best per value (line).

    Parameters
    ----------
    data
        An AnnData after :func:`sccr.tl.tune` (``uns[key]``) or the table it returned.
    key
        Where :func:`sccr.tl.tune` stored its results.
    score
        Column to plot (``"score"``, or a loss such as ``"mcv_poisson"``).
    save
        Also write the figure to this path.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per option; the dashed line is no imputation, the star the chosen setting.
    """
    from matplotlib.figure import Figure

    table = _tune_table(data, key)
    imputed = table[table["method"] != "none"]
    none = table.loc[table["method"] == "none", score]
    options = [
        c
        for c in ("method", "beta", "gamma", "n_iter", "k", "k_gene", "alpha", "sym_final", "knn")
        if c in imputed.columns and imputed[c].dropna().astype(str).nunique() > 1
    ]
    options = options or ["method"]
    fig = Figure(figsize=(3.2 * len(options), 3.2), layout="constrained")
    axes = fig.subplots(1, len(options), squeeze=False)[0]
    chosen = table.index[table["chosen"].astype(bool)] if "chosen" in table.columns else []
    best = table.loc[chosen[0]] if len(chosen) else table.iloc[0]  # the chosen setting (older tables: the lowest)
    for ax, option in zip(axes, options, strict=True):
        rows = imputed.dropna(subset=[option])
        values = sorted(rows[option].unique(), key=lambda v: (isinstance(v, str), v))
        positions = {v: i for i, v in enumerate(values)}
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)
        x = rows[option].map(positions)
        ax.scatter(x, rows[score], s=14, color="0.55", zorder=2, label="settings scored")
        profile = [rows.loc[rows[option] == v, score].min() for v in values]
        ax.plot(range(len(values)), profile, "-o", color="C0", zorder=3, label="best at this value")
        if len(none):
            ax.axhline(float(none.iloc[0]), ls="--", color="C3", label="no imputation")
        if best["method"] != "none" and option in best and best[option] == best[option]:
            ax.scatter(
                [positions.get(best[option], np.nan)],
                [best[score]],
                marker="*",
                s=160,
                color="C1",
                zorder=4,
                label="chosen",
            )
        ax.set_xticks(range(len(values)), [f"{v:g}" if numeric else str(v) for v in values])
        ax.set_xlabel(option)
        ax.set_ylabel(f"{score} (lower is better)")
    axes[0].legend(fontsize=7)
    _save(fig, save)
    return fig


def _embedding(adata, basis: str | None) -> tuple[np.ndarray, str]:
    from .._errors import InputError

    if basis is not None:
        if basis not in adata.obsm:
            raise InputError(
                f"basis {basis!r} not in adata.obsm (available: {', '.join(adata.obsm.keys()) or 'none'}); pass one of them or basis=None"
            )
        return np.asarray(adata.obsm[basis])[:, :2], basis
    for name in ("X_umap", "X_tsne", "X_pca"):
        if name in adata.obsm:
            return np.asarray(adata.obsm[name])[:, :2], name
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    X = adata.X
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    return TruncatedSVD(2, random_state=0).fit_transform(X), "first two singular vectors of X"


def stability_cells(
    adata,
    *,
    key: str = "sccr_stability",
    color: str = "max_change",
    basis: str | None = None,
    ax=None,
    save: str | os.PathLike | None = None,
):
    """Per-cell stability (:func:`sccr.tl.stability`) on an embedding.

    Parameters
    ----------
    adata
        After :func:`sccr.tl.stability`.
    key
        Its ``key_added``.
    color
        ``"max_change"`` (largest change of the cell's imputed row) or ``"neighbours_changed"``.
    basis
        ``obsm`` key of the embedding (default: UMAP, t-SNE or PCA when present, else the
        first two singular vectors of ``X``).
    ax, save
        Axes to draw on; path to write the figure to.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from .._errors import InputError

    column = f"{key}_{color}"
    if column not in adata.obs:
        raise InputError(f"adata.obs has no {column!r}; run sccr.tl.stability(adata, key_added={key!r}) first")
    xy, name = _embedding(adata, basis)
    values = np.asarray(adata.obs[column], dtype=float)
    order = np.argsort(values, kind="stable")  # the most changed cells drawn last, on top
    fig, ax = _new_axes(ax)
    points = ax.scatter(xy[order, 0], xy[order, 1], c=values[order], s=6, cmap="viridis", linewidths=0)
    fig.colorbar(points, ax=ax, label=color.replace("_", " "))
    summary = adata.uns.get(key, {})
    ax.set_title(f"stability: {summary.get('verdict', '?')}", fontsize=10)
    ax.set_xlabel(f"{name} 1")
    ax.set_ylabel(f"{name} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, save)
    return ax


def null_correlations(data, *, key: str = "sccr_null", ax=None, save: str | os.PathLike | None = None):
    """Gene-gene correlations after imputation: the real data against the permutation null (:func:`sccr.tl.null_check`).

    Parameters
    ----------
    data
        An AnnData with ``uns[key]`` or the dict :func:`sccr.tl.null_check` returned.
    key
        Where the null check was stored.
    ax, save
        Axes to draw on; path to write the figure to.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from .._errors import InputError

    result: Any = data
    if hasattr(data, "uns"):
        if key not in data.uns:
            raise InputError(f"adata.uns has no {key!r}; run sccr.tl.null_check(adata) first")
        result = data.uns[key]
    bins = np.asarray(result["bins"], dtype=float)
    fig, ax = _new_axes(ax)
    for name, colour in (("real", "C0"), ("null", "C3")):
        counts = np.asarray(result[name]["histogram"], dtype=float)
        share = counts / max(counts.sum(), 1)
        ax.stairs(
            share,
            bins,
            color=colour,
            label=f"{name}: {result[name]['associating']} > {result['threshold']:g}, "
            f"{result[name]['dissociating']} < -{result['threshold']:g}",
        )
    for t in (-result["threshold"], result["threshold"]):
        ax.axvline(t, ls=":", color="0.4")
    ax.set_yscale("log")
    ax.set_xlabel("correlation of two genes after imputation")
    ax.set_ylabel("share of gene pairs")
    ax.legend(fontsize=7)
    _save(fig, save)
    return ax
