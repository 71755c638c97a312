"""Memory planning: in memory when it fits, out of core when only that fits, refused (before any work) otherwise."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_expression
from sccr._engine import memory as _memory
from sccr._engine.ann import SLICE_BYTES, search_bytes
from sccr._engine.checks import check_expression
from sccr._engine.memory import SKIP_ENV, available_bytes, estimate_peak_bytes, plan
from sccr._options import Options, parse_memory_size
from sccr.cli import main

API = dict(k=5, n_iter=2, n_jobs=1)
FIXES = ("memory_budget=", "--memory-budget 8G", "backend='dask'", "--backend dask --scheduler ADDR", f"{SKIP_ENV}=1")


@pytest.fixture
def tiny_machine(monkeypatch):
    """Pretend 1 MiB is available and that the guard is not switched off."""
    monkeypatch.delenv(SKIP_ENV, raising=False)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1 << 20)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the pipeline starts."""
    monkeypatch.setattr("sccr._engine.entry.run_stages", lambda *a, **k: pytest.fail("the run started"))
    monkeypatch.setattr("sccr._anndata.atomic_output", lambda *a, **k: pytest.fail("the output was started"))


def params(**kw):
    options = dict(
        method="sccr",
        k=15,
        k_gene=2,
        n_iter=40,
        alpha=0.05,
        beta=0.99,
        gamma=0.01,
        sym_final=True,
        knn="auto",
        n_jobs=2,
        progress=False,
    )
    return Options(**{**options, **kw})


def plan_out_of_core(X, options, memory_budget=None):
    """Whether the plan for in-memory ``X`` puts the intermediate matrices in scratch files."""
    nnz = X.nnz if sp.issparse(X) else None
    return plan(X.shape, nnz, options.replace(memory_budget=memory_budget))[0]


@pytest.mark.parametrize("method,copies", [("sccr", 3), ("scfp", 2), ("scbfp", 2)])
def test_estimate_covers_the_dense_copies_and_grows_with_size(method, copies):
    small = estimate_peak_bytes(10_000, 2000, None, method=method, k=15, k_gene=2, n_jobs=2)
    big = estimate_peak_bytes(1_000_000, 2000, None, method=method, k=15, k_gene=2, n_jobs=2)
    assert small >= copies * 4 * 10_000 * 2000
    assert big >= copies * 4 * 1_000_000 * 2000 and big > 30 * small
    wider = estimate_peak_bytes(10_000, 20_000, None, method=method, k=15, k_gene=2, n_jobs=2)
    assert wider > 3 * small


def test_sparse_input_costs_its_copies():
    dense = estimate_peak_bytes(50_000, 2000, None, method="sccr", k=15, k_gene=2, n_jobs=2)
    sparse = estimate_peak_bytes(50_000, 2000, 10**7, method="sccr", k=15, k_gene=2, n_jobs=2)
    assert sparse > dense


def test_refusal_names_estimate_available_and_fixes(tiny_machine):
    X = check_expression(make_expression(seed=2), 5)
    with pytest.raises(sccr.InputError) as err:
        plan_out_of_core(X, params(k=5))
    message = str(err.value)
    assert message.startswith("imputing 60 cells x 30 genes with sccr needs about")
    assert "of memory even out of core (" in message and "in memory) but 1.0 MiB is available" in message
    for fix in FIXES:
        assert fix in message


def test_refusal_names_the_budget(monkeypatch):
    monkeypatch.delenv(SKIP_ENV, raising=False)
    X = check_expression(make_expression(seed=2), 5)
    with pytest.raises(sccr.InputError, match="but the memory budget is 1.0 KiB"):
        plan_out_of_core(X, params(k=5), memory_budget="1K")


def _needs(X, method="sccr", n_jobs=2):
    """Estimated peak in memory and out of core."""
    nnz = X.nnz if sp.issparse(X) else None
    return [
        estimate_peak_bytes(*X.shape, nnz, method=method, k=5, k_gene=2, n_jobs=n_jobs, out_of_core=ooc)
        for ooc in (False, True)
    ]


def test_out_of_core_needs_less():
    """Out of core, the intermediate matrices leave memory: a copy fewer with the exact search, and
    with the approximate one only a column slice (at most 2 GiB) and the output, if held, remain."""
    n, g = 1_000_000, 2000
    kw = dict(method="sccr", k=15, k_gene=2, n_jobs=2)
    for exact, slice_bytes in ((True, 0), (False, SLICE_BYTES)):
        in_memory, out_of_core = (
            estimate_peak_bytes(n, g, None, out_of_core=ooc, exact=exact, **kw) for ooc in (False, True)
        )
        assert out_of_core <= in_memory - 4 * n * g + slice_bytes
    streamed = estimate_peak_bytes(n, g, None, out_of_core=True, output_in_memory=False, exact=False, **kw)
    assert streamed < out_of_core  # the output written to a file: no dense copy at all, only the search's own memory
    assert streamed < search_bytes(n, g, streamed=True) + 4 * n * g


def test_in_memory_approximate_run_holds_two_matrices_beside_its_search():
    """scCR's second cell graph runs while D0 and C are both held (step 4 needs D0 again)."""
    n, g = 1_000_000, 2000
    estimate = estimate_peak_bytes(
        n, g, None, method="sccr", k=15, k_gene=2, n_jobs=2, output_in_memory=False, exact=False
    )
    assert estimate >= 2 * 4 * n * g + search_bytes(n, g, streamed=False)


def test_plan_follows_the_budget(monkeypatch):
    monkeypatch.delenv(SKIP_ENV, raising=False)
    X = check_expression(make_expression(seed=2), 5)
    in_memory, out_of_core = _needs(X)
    assert plan_out_of_core(X, params(k=5), memory_budget=in_memory) is False
    assert plan_out_of_core(X, params(k=5), memory_budget=in_memory - 1) is True
    assert plan_out_of_core(X, params(k=5), memory_budget=out_of_core) is True
    with pytest.raises(sccr.InputError):
        plan_out_of_core(X, params(k=5), memory_budget=out_of_core - 1)
    monkeypatch.setattr(_memory, "available_bytes", lambda: out_of_core)  # no budget: what is available
    assert plan_out_of_core(X, params(k=5)) is True


@pytest.mark.parametrize("nnz", [None, 500])
@pytest.mark.parametrize("knn", ["exact", "approx"])
def test_an_input_in_a_file_goes_to_disk_last(monkeypatch, nnz, knn):
    """Memory, then scratch files for the intermediate matrices, then the input streamed too; refused below that."""
    monkeypatch.delenv(SKIP_ENV, raising=False)
    shape, p, held = (60, 30), params(k=5, knn=knn), 7200

    def need(out_of_core, input_on_disk):
        return (0 if input_on_disk else held) + estimate_peak_bytes(
            *shape,
            nnz,
            method="sccr",
            k=5,
            k_gene=2,
            n_jobs=2,
            out_of_core=out_of_core,
            exact=knn == "exact",
            input_on_disk=input_on_disk,
        )

    steps = [(False, False), (True, False), (True, True)]
    assert need(*steps[0]) > need(*steps[1]) > need(*steps[2])
    for step in steps:
        assert plan(shape, nnz, p.replace(memory_budget=need(*step)), input_bytes=held) == step
    with pytest.raises(sccr.InputError, match="even out of core"):
        plan(shape, nnz, p.replace(memory_budget=need(True, True) - 1), input_bytes=held)
    # An input already in memory stays there: its plan never streams it, and its size is not counted again.
    assert plan(shape, nnz, p.replace(memory_budget=need(True, False) - held)) == (True, False)


def test_input_on_disk_drops_the_sparse_copies():
    sparse = dict(method="sccr", k=15, k_gene=2, n_jobs=2, out_of_core=True, exact=False)
    n, g, nnz = 1_000_000, 2000, 175_000_000
    assert (
        estimate_peak_bytes(n, g, nnz, **sparse) - estimate_peak_bytes(n, g, nnz, input_on_disk=True, **sparse)
        >= 20 * nnz - SLICE_BYTES
    )


# With exact searches only scCR gains: scFP's and scBFP's peak is an exact search, which loads
# its matrix from the scratch file and normalises a copy, as much as in memory.
@pytest.mark.parametrize("method,layout", [("sccr", "dense"), ("sccr", "sparse")])
def test_budget_runs_out_of_core_with_the_same_output(monkeypatch, tmp_path, method, layout):
    """A budget that only an out-of-core run fits gives the same output, bitwise, and leaves no scratch file."""
    monkeypatch.delenv(SKIP_ENV, raising=False)
    X = make_expression(seed=2)
    X = sp.csr_matrix(X) if layout == "sparse" else X
    _, out_of_core = _needs(check_expression(X, 5), method, n_jobs=1)
    plain = sccr.SCCR(method=method, **API).fit(X)
    spilled = sccr.SCCR(method=method, memory_budget=out_of_core, scratch_dir=str(tmp_path), **API).fit(X)
    assert not plain.out_of_core_ and spilled.out_of_core_
    np.testing.assert_array_equal(spilled.imputed_, plain.imputed_)
    assert (spilled.cell_graph_ != plain.cell_graph_).nnz == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("8G", 8 << 30),
        ("512M", 512 << 20),
        ("16GiB", 16 << 30),
        ("1.5 GB", 3 << 29),
        ("100", 100),
        ("2k", 2048),
        (4096, 4096),
        (None, None),
    ],
)
def test_parse_memory_size(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "8X", "-1G", "0", 0, True, [8]])
def test_parse_memory_size_refuses(bad):
    with pytest.raises(sccr.InputError, match="memory budget"):
        parse_memory_size(bad)


def test_both_apis_refuse_before_any_work(tiny_machine, no_work):
    X = make_expression(seed=2)
    with pytest.raises(sccr.InputError, match="needs about"):
        sccr.SCCR(**API).fit(X)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    with pytest.raises(sccr.InputError, match="needs about"):
        sccr.impute(adata, **API)
    assert "sccr" not in adata.layers


def test_cli_refuses_on_one_line_and_leaves_nothing(tiny_machine, no_work, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    ad.AnnData(X=sp.csr_matrix(make_expression(seed=2))).write_h5ad(tmp_path / "in.h5ad")
    code = main(["impute", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"), "--k", "5", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("sccr: error: imputing 60 cells")
    assert "--memory-budget 8G" in err[0]
    assert [p.name for p in tmp_path.iterdir()] == ["in.h5ad"]


def test_environment_variable_skips_the_guard(tiny_machine, monkeypatch):
    monkeypatch.setenv(SKIP_ENV, "1")
    out = sccr.SCCR(**API).fit_transform(make_expression(seed=2))
    assert out.dtype == np.float32


def test_unknown_available_memory_skips_the_guard(monkeypatch):
    monkeypatch.delenv(SKIP_ENV, raising=False)
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)
    assert plan_out_of_core(check_expression(make_expression(seed=2), 5), params(k=5)) is False


def test_available_bytes_reads_this_machine():
    available = available_bytes()
    assert available is None or available > 0


@pytest.mark.parametrize(
    "limit,usage,expected",
    [
        ("1073741824\n", "73741824\n", 1_000_000_000),
        ("max\n", "5\n", None),
        ("9223372036854771712\n", "5\n", None),  # cgroup v1 without a limit
    ],
)
def test_cgroup_limit(tmp_path, monkeypatch, limit, usage, expected):
    (tmp_path / "memory.max").write_text(limit)
    (tmp_path / "memory.current").write_text(usage)
    real_path = _memory.Path
    monkeypatch.setattr(_memory, "Path", lambda p: real_path(str(p).replace("/sys/fs/cgroup", str(tmp_path))))
    assert _memory._cgroup_free_bytes() == expected
