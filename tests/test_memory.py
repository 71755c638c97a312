"""Memory guard: a run that cannot fit is refused before any work, with the estimate and the fixes."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_expression
from sccr import _memory
from sccr._memory import SKIP_ENV, available_bytes, check_memory, estimate_peak_bytes
from sccr._validation import check_expression, check_params
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
    monkeypatch.setattr("sccr._estimator.run", lambda *a, **k: pytest.fail("the run started"))


def params(**kw):
    options = dict(method="sccr", k=15, k_gene=2, n_iter=40, alpha=0.05, beta=0.99, gamma=0.01,
                   sym_final=True, knn="auto", n_jobs=2, progress=False)
    return check_params(**{**options, **kw})


@pytest.mark.parametrize("method,copies", [("sccr", 3), ("scfp", 2), ("scbfp", 3)])
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
        check_memory(X, params(k=5))
    message = str(err.value)
    assert message.startswith("imputing 60 cells x 30 genes with sccr needs about")
    assert "GiB of memory but 0.0 GiB is available" in message
    for fix in FIXES:
        assert fix in message


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
    check_memory(check_expression(make_expression(seed=2), 5), params(k=5))


def test_enough_memory_passes(monkeypatch):
    monkeypatch.delenv(SKIP_ENV, raising=False)
    X = check_expression(make_expression(seed=2), 5)
    need = estimate_peak_bytes(*X.shape, None, method="sccr", k=5, k_gene=2, n_jobs=2)
    monkeypatch.setattr(_memory, "available_bytes", lambda: need)
    check_memory(X, params(k=5))
    monkeypatch.setattr(_memory, "available_bytes", lambda: need - 1)
    with pytest.raises(sccr.InputError):
        check_memory(X, params(k=5))


def test_available_bytes_reads_this_machine():
    available = available_bytes()
    assert available is None or available > 0


@pytest.mark.parametrize("limit,usage,expected", [
    ("1073741824\n", "73741824\n", 1_000_000_000),
    ("max\n", "5\n", None),
    ("9223372036854771712\n", "5\n", None),  # cgroup v1 without a limit
])
def test_cgroup_limit(tmp_path, monkeypatch, limit, usage, expected):
    (tmp_path / "memory.max").write_text(limit)
    (tmp_path / "memory.current").write_text(usage)
    real_path = _memory.Path
    monkeypatch.setattr(_memory, "Path", lambda p: real_path(str(p).replace("/sys/fs/cgroup", str(tmp_path))))
    assert _memory._cgroup_free_bytes() == expected
