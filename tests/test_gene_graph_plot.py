"""sccr.pl.gene_graph: associating and dissociating partners drawn apart."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")  # the [plot] extra; installed by `make test`

import matplotlib.pyplot as plt  # noqa: E402

import sccr  # noqa: E402
from sccr.pl._gene_graph import COLOURS  # noqa: E402


@pytest.fixture
def imputed(adata):
    sccr.impute(adata, k=5, n_iter=10, n_jobs=1)
    return adata


def test_one_panel_per_gene_with_coloured_edges(imputed, tmp_path):
    genes = list(imputed.var_names[:3])
    axes = sccr.pl.gene_graph(imputed, genes, save=tmp_path / "g.png")
    assert len(axes) == 3 and (tmp_path / "g.png").stat().st_size > 0
    for axis, gene in zip(axes, genes, strict=True):
        table = sccr.get.gene_partners(imputed, gene)
        colours = [line.get_color() for line in axis.lines]
        assert colours == [COLOURS[s] for s in table["sign"]]
        texts = [t.get_text() for t in axis.texts]
        assert gene in texts and all(any(p in t for t in texts) for p in table["partner"])
    plt.close("all")


def test_shown_by_default_without_ax_or_save(imputed, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(True))
    sccr.pl.gene_graph(imputed, "g0")
    sccr.pl.gene_graph(imputed, "g0", show=False)
    assert shown == [True]
    plt.close("all")


def test_bad_input(imputed):
    with pytest.raises(sccr.InputError, match="genes is empty"):
        sccr.pl.gene_graph(imputed, [])
    from matplotlib.figure import Figure

    with pytest.raises(sccr.InputError, match="got 1 axes for 2 genes"):
        sccr.pl.gene_graph(imputed, ["g0", "g1"], ax=Figure().subplots())
