"""Plots of the signed gene graph."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from .._errors import InputError

#: Edge colours: associating (co-expressed) and dissociating (anti-correlated) partners.
COLOURS = {"associating": "#1f77b4", "dissociating": "#d62728"}


def gene_graph(
    adata: ad.AnnData,
    genes: str | Sequence[str],
    *,
    n: int = 10,
    key: str = "sccr",
    ax=None,
    save: str | None = None,
    show: bool | None = None,
):
    """Draw each gene with its partners in the signed gene graph: associating in blue, dissociating in red.

    One panel per gene: the gene in the centre, its partners (at most ``n``, from
    :func:`sccr.get.gene_partners`) around it, edge width proportional to the
    propagation weight, each partner labelled with its correlation.

    Parameters
    ----------
    adata
        An AnnData imputed by :func:`sccr.impute` (``key_added=key``).
    genes
        A gene name or a list of them.
    n, key
        As in :func:`sccr.get.gene_partners`.
    ax
        A matplotlib Axes (one gene) or a sequence of them (one per gene); default: a new figure.
    save
        Write the figure to this path (any format matplotlib knows).
    show
        Show the figure (``plt.show()``); default: only when ``ax`` and ``save`` are not given
        (in a notebook the figure then appears under the cell).

    Returns
    -------
    list of matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..get import gene_partners

    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise InputError("genes is empty; pass a gene name or a list of them")
    tables = [gene_partners(adata, gene, n=n, key=key) for gene in genes]
    if ax is None:
        fig, axes = plt.subplots(1, len(genes), figsize=(3.4 * len(genes), 3.6), squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(np.atleast_1d(ax))
        if len(axes) != len(genes):
            raise InputError(f"got {len(axes)} axes for {len(genes)} genes; pass one Axes per gene")
        fig = axes[0].figure
    for axis, gene, table in zip(axes, genes, tables, strict=True):
        angles = np.linspace(0, 2 * np.pi, max(len(table), 1), endpoint=False) + np.pi / 2
        largest = float(np.abs(table["weight"]).max()) if len(table) else 1.0
        for angle, row in zip(angles, table.itertuples(), strict=True):
            x, y = np.cos(angle), np.sin(angle)
            axis.plot([0, x], [0, y], color=COLOURS[row.sign], linewidth=0.5 + 4 * abs(row.weight) / largest, zorder=1)
            label = row.partner if np.isnan(row.correlation) else f"{row.partner}\nr={row.correlation:+.2f}"
            axis.annotate(
                label,
                (x, y),
                ha="center",
                va="center",
                fontsize=7,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": COLOURS[row.sign], "lw": 0.8},
            )
        axis.annotate(
            gene,
            (0, 0),
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.3", "fc": "#eeeeee", "ec": "black"},
        )
        if not len(table):
            axis.set_title(f"{gene}: no partners", fontsize=9)
        axis.set_xlim(-1.45, 1.45)
        axis.set_ylim(-1.35, 1.35)
        axis.set_aspect("equal")
        axis.axis("off")
    handles = [Line2D([], [], color=colour, linewidth=2, label=name) for name, colour in COLOURS.items()]
    axes[-1].legend(handles=handles, loc="lower right", fontsize=7, frameon=False, bbox_to_anchor=(1.05, -0.12))
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show if show is not None else (ax is None and save is None):
        plt.show()
    return axes
