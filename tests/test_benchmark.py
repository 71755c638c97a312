"""``sccr.benchmark`` / ``sccr benchmark``: records, resume, skipped methods, report, CLI errors."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_counts
from sccr._benchmark import runner as _benchmark
from sccr._benchmark.report import summary_markdown
from sccr._benchmark.runner import data_gene_edges, gene_edge_signs, load_dataset, method_params, read_records
from sccr._resources import PeakRSS
from sccr.cli import main

ALL = ["raw", "sccr", "scfp", "scbfp", "magic", "alra", "knn"]
REQUIRED = {
    "dataset",
    "method",
    "task",
    "rate",
    "seed",
    "ari",
    "nmi",
    "ca",
    "seconds",
    "peak_rss_mb",
    "params",
    "versions",
}
DROPOUT = {"rmse", "mae", "median_l1", "cosine"}


@pytest.fixture
def counts_file(tmp_path):
    """Raw counts of 90 cells x 60 genes in three groups, labels in obs['celltype']."""
    a = ad.AnnData(sp.csr_matrix(make_counts(90, 60, seed=2)), obs={"celltype": (np.arange(90) % 3).astype(str)})
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    path = tmp_path / "tiny.h5ad"
    a.write_h5ad(path)
    return path


def run(counts_file, out, **kw):
    kw = {
        "methods": ["raw", "knn"],
        "rates": (0.5,),
        "seeds": (0, 1),
        "figures": False,
        "progress": False,
        "echo": lambda m: None,
        **kw,
    }
    return sccr.benchmark([counts_file], out=out, **kw)


def test_every_method_end_to_end(counts_file, tmp_path):
    pytest.importorskip("magic")
    records = run(counts_file, tmp_path / "out", methods=ALL)
    assert len(records) == len(ALL) * (2 + 2 + 2)  # (clustering + mcar + mnar) x 2 seeds
    for r in records:
        assert REQUIRED <= r.keys()
        assert 0 <= r["ca"] <= 1 and r["seconds"] >= 0 and r["peak_rss_mb"] > 0
        if r["task"] == "clustering":
            assert r["rate"] == 0.0 and not DROPOUT & r.keys()
        else:
            assert DROPOUT <= r.keys() and r["n_dropped"] > 0
    by = {(r["method"], r["task"], r["seed"]): r for r in records}
    assert by[("sccr", "clustering", 0)]["params"]["gamma"] == 0.01
    assert by[("sccr", "mcar", 0)]["params"]["gamma"] == 1.0
    # One imputation per method for clustering: seed 1 reuses it and says so.
    assert not by[("sccr", "clustering", 0)]["imputation_reused"]
    assert by[("sccr", "clustering", 1)]["imputation_reused"]
    assert by[("sccr", "clustering", 1)]["seconds"] == by[("sccr", "clustering", 0)]["seconds"]
    # Raw leaves dropped entries at 0; every imputing method does better than that here.
    raw_error = by[("raw", "mcar", 0)]["mae"]
    for method in ("sccr", "scfp", "scbfp", "magic", "alra", "knn"):
        assert by[(method, "mcar", 0)]["mae"] < raw_error, method
    assert {"associating", "dissociating"} == by[("sccr", "clustering", 0)]["gene_edges"].keys()
    assert by[("scbfp", "clustering", 0)]["gene_edges"]["dissociating"] == 0  # cosine weights are >= 0
    assert (tmp_path / "out" / "summary.md").exists()


def test_resume_skips_existing_records(counts_file, tmp_path):
    out = tmp_path / "out"
    first = run(counts_file, out)
    text = (out / "results.jsonl").read_text()
    assert run(counts_file, out) == first
    assert (out / "results.jsonl").read_text() == text
    # Remove two records and leave a half-written line: only those two are redone.
    lines = text.splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-1][:20])
    again = run(counts_file, out)
    assert len(again) == len(first)
    assert [json.loads(x) for x in lines[:-2]] == again[:-2]
    # A wider grid only adds the new cells; changed parameters are new records.
    assert len(run(counts_file, out, rates=(0.5, 0.3))) == len(first) + 2 * 2 * 2
    assert len(run(counts_file, out, resume=False)) == len(first)


def test_record_key_includes_parameters(monkeypatch, counts_file, tmp_path):
    out = tmp_path / "out"
    n = len(run(counts_file, out, methods=["knn"], tasks=["clustering"]))
    monkeypatch.setattr(_benchmark, "method_params", lambda m, d, t: {"k": 3} if m == "knn" else {})
    assert len(run(counts_file, out, methods=["knn"], tasks=["clustering"])) == 2 * n


def test_missing_optional_dependency_is_skipped(monkeypatch, counts_file, tmp_path):
    monkeypatch.setitem(_benchmark.OPTIONAL_MODULES, "magic", "sccr_no_such_module")
    notices = []
    records = run(counts_file, tmp_path / "out", methods=["magic", "raw"], tasks=["clustering"], echo=notices.append)
    assert {r["method"] for r in records} == {"raw"}
    assert len(notices) == 1 and "skipping magic" in notices[0]


@pytest.mark.filterwarnings("ignore:no non-zero value in:sccr.InputWarning")  # genes emptied by 80% dropout
def test_figures_written(monkeypatch, counts_file, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("umap")
    # The real UMAP is slow to compile; the figure only needs some 2-D embedding.
    monkeypatch.setattr(_benchmark, "_umap", lambda M, seed: M[:, :2].astype(np.float32))
    out = tmp_path / "out"
    run(counts_file, out, methods=["raw", "scbfp", "sccr"], rates=(0.8,), figures=True)
    names = {p.name for p in (out / "figures").iterdir()}
    assert names == {"errors_tiny.png", "umap_tiny.png", "clustering.png", "gene_edges.png", "time_vs_cells.png"}
    assert len(list((out / "embeddings").iterdir())) == 3 * 2


def test_bad_grid_and_labels(counts_file, tmp_path):
    with pytest.raises(sccr.InputError, match="unknown"):
        run(counts_file, tmp_path, methods=["raw", "scvi"])
    with pytest.raises(sccr.InputError, match="rates"):
        run(counts_file, tmp_path, rates=(1.5,))
    with pytest.raises(sccr.InputError, match="no obs column 'cluster'"):
        run(counts_file, tmp_path, label_key="cluster")


def test_cli_benchmark(counts_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "benchmark",
        str(counts_file),
        "--out",
        str(out),
        "--methods",
        "raw,knn",
        "--tasks",
        "clustering,mcar",
        "--rates",
        "0.4",
        "--seeds",
        "0",
        "--no-figures",
        "--quiet",
    ]
    assert main(args) == 0
    records = read_records(out / "results.jsonl")
    assert {(r["method"], r["task"]) for r in records} == {
        (m, t) for m in ("raw", "knn") for t in ("clustering", "mcar")
    }
    assert main(args[:-2] + ["--label-key", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sccr: error:") and "'nope'" in err and len(err.strip().splitlines()) == 1
    assert main(args + ["--seeds", "x"]) == 2


def test_genes_dir_fixes_the_gene_list(counts_file, tmp_path):
    genes = [f"g{j}" for j in range(59, 29, -1)]
    (tmp_path / "tiny.genes.txt").write_text("\n".join(genes) + "\n")
    records = run(counts_file, tmp_path / "out", methods=["raw"], tasks=["clustering"], seeds=(0,), genes_dir=tmp_path)
    assert records[0]["n_genes"] == 30 and records[0]["preprocess"]["genes"].endswith("tiny.genes.txt")
    # Without a list for the data set, the top genes by variance are used.
    other = run(
        counts_file, tmp_path / "out2", methods=["raw"], tasks=["clustering"], seeds=(0,), genes_dir=tmp_path / "none"
    )
    assert other[0]["n_genes"] == 60


def test_bundled_data_set_by_name_and_paper_settings():
    data = load_dataset("worm_neuron", label_key="celltype")
    assert data.name == "worm_neuron" and data.X.shape == (4186, 2000) and len(set(data.labels)) == 10
    assert method_params("sccr", "worm_neuron", "clustering") == {
        "k": 15,
        "k_gene": 2,
        "n_iter": 40,
        "alpha": 0.05,
        "beta": 0.99,
        "gamma": 0.01,
        "sym_final": False,
    }
    assert method_params("scfp", "other", "mnar")["sym_final"] is True
    assert method_params("sccr", "other", "mnar")["gamma"] == 1.0


# --- parts ---------------------------------------------------------------------------------


def test_gene_edge_signs_counts_each_pair_once():
    G = sp.csr_matrix(np.array([[1, 0.5, -0.2], [0.5, 1, 0], [-0.2, 0, 1]]))
    assert gene_edge_signs(G) == {"associating": 1, "dissociating": 1}
    # An edge listed in one direction only still counts once.
    assert gene_edge_signs(sp.csr_matrix(np.array([[0, -1.0], [0, 0]]))) == {"associating": 0, "dissociating": 1}


def test_data_gene_edges_hand_case():
    # Pearson r: g0-g1 0.997, g0-g2 -0.994, g1-g2 -0.980, g0-g3 0, g1-g3 0.078, g2-g3 0.096.
    # Top partner of each gene: g0->g1 (+), g1->g0 (same pair), g2->g0 (-), g3->g2 (+).
    X = sp.csr_matrix(np.array([[1, 2, 5, 1], [2, 4, 4, 0], [3, 6, 3, 0], [4, 8, 2, 0], [5, 11, 1.5, 1]], dtype=float))
    assert data_gene_edges(X, k_gene=1) == {"associating": 2, "dissociating": 1}


def test_summary_marks_best_of_each_row():
    base = {
        "dataset": "d",
        "task": "clustering",
        "rate": 0.0,
        "nmi": 0.5,
        "ca": 0.5,
        "seconds": 1.0,
        "peak_rss_mb": 10.0,
    }
    records = [
        {**base, "method": m, "seed": s, "ari": a}
        for m, vals in (("raw", (0.1, 0.3)), ("sccr", (0.6, 0.8)))
        for s, a in enumerate(vals)
    ]
    text = summary_markdown(records)
    assert "| d | 0.200 ± 0.100 | **0.700 ± 0.100** |" in text


def test_peak_rss_sees_an_allocation():
    with PeakRSS() as before:
        pass
    with PeakRSS() as rss:
        block = np.ones(200 * 1024**2 // 8)
        del block
    assert rss.peak_mb > before.peak_mb + 150


def test_rerun_says_how_many_records_it_skipped(counts_file, tmp_path):
    out, notices = tmp_path / "out", []
    first = run(counts_file, out)
    run(counts_file, out, echo=notices.append)
    assert notices == [
        f"sccr: notice: {len(first)} of {len(first)} records were already in {out / 'results.jsonl'} "
        "and were skipped (--force recomputes them)"
    ]


@pytest.mark.filterwarnings("ignore:no non-zero value in:sccr.InputWarning")
def test_figures_show_only_what_ran(monkeypatch, counts_file, tmp_path):
    """A subset of methods and tasks: no empty row, column or bar; legends for types and methods; 150 dpi."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("umap")
    from sccr._benchmark import figures

    monkeypatch.setattr(_benchmark, "_umap", lambda M, seed: M[:, :2].astype(np.float32))
    saved = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.__setitem__(path.name, fig))
    run(counts_file, tmp_path / "out", methods=["raw", "sccr"], tasks=["clustering"], figures=True)
    umap = saved["umap_tiny.png"]
    assert len(umap.axes) == 2 and [t.get_text() for t in umap.legends[0].texts] == ["0", "1", "2"]
    edges = saved["gene_edges.png"]
    assert [t.get_text() for t in edges.axes[0].get_xticklabels()] == ["data (top |r|)", "scCR graph"]
    assert [t.get_text() for t in edges.legends[0].texts] == ["associating (r > 0)", "dissociating (r < 0)"]
    times = saved["time_vs_cells.png"]
    assert [t.get_text() for t in times.axes[0].get_xticklabels()] == ["raw", "sccr"]  # one size: bars per method
    assert "errors_tiny.png" not in saved and figures.DPI >= 150
