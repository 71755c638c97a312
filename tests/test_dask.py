"""Dask backend: results equal the local backend on a LocalCluster of two worker processes."""

from __future__ import annotations

import warnings

import anndata as ad
import dask
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

import sccr
from helpers import make_expression
from sccr._engine.dask import DaskExecutor
from sccr._engine.execution import Execution, executing
from sccr._engine.graph import knn_graph
from sccr._engine.propagation import propagate_block, propagate_chunks
from sccr.cli import main

distributed = pytest.importorskip("distributed")

FAST = dict(k=5, n_iter=8, n_jobs=1)


@pytest.fixture(autouse=True)
def _restore_showwarning(monkeypatch):
    """main() installs its own warnings.showwarning; undo that after every test."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    """32-row similarity blocks for 300 cells, so that the k-NN searches have several tasks."""
    monkeypatch.setattr(sccr._engine.graph, "SIMILARITY_BLOCK_ELEMENTS", 300 * 32)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def data() -> ad.AnnData:
    """300 cells x 50 genes, so that every stage has several chunks (gene stage: 5)."""
    return ad.AnnData(sp.csr_matrix(make_expression(300, 50, seed=3)))


def assert_same_run(local: ad.AnnData, other: ad.AnnData, key: str = "sccr") -> None:
    np.testing.assert_allclose(other.layers[key], local.layers[key], rtol=1e-6, atol=1e-7)
    for got, want in ((other.obsp, local.obsp), (other.varp, local.varp)):
        assert set(got) == set(want)
        for name in want:
            assert (got[name] != want[name]).nnz == 0, name


def test_dask_distributes_the_riding_genes(data, client):
    """Genes outside the graph genes are propagated on the workers too, with the local result."""
    mask = np.arange(data.n_vars) < 20
    local = sccr.impute(data, mask_var=mask, copy=True, **FAST)
    with distributed.get_task_stream(client) as stream:
        remote = sccr.impute(data, mask_var=mask, copy=True, backend="dask", client=client, **FAST)
    assert_same_run(local, remote)
    assert remote.uns["sccr"]["params"]["n_graph_genes"] == 20 and "riding_genes" in remote.uns["sccr"]["timings"]
    propagations = [task for task in stream.data if str(task["key"]).find("_propagate_task") >= 0]
    # 5 propagations of the graph genes' stages (1 chunk each, the gene stage 5) and 3 of the 30 riding genes
    assert len(propagations) >= 1 + 5 + 1 + 1 + 3


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_dask_equals_local(data, client, method):
    local = sccr.impute(data, method=method, copy=True, **FAST)
    with distributed.get_task_stream(client) as stream:
        remote = sccr.impute(data, method=method, copy=True, backend="dask", client=client, **FAST)
    ran = [task["key"][0] if isinstance(task["key"], tuple) else task["key"] for task in stream.data]
    for name in ("_propagate_task", "_search_task"):  # both loops ran on the workers
        assert sum(key.startswith(name) for key in ran) >= 2, ran
    assert_same_run(local, remote)
    params = remote.uns["sccr"]["params"]
    assert params["backend"] == "dask" and params["scheduler"] == client.scheduler.address
    assert "client" not in params


def test_dense_input_and_estimator(client):
    X = make_expression(150, 40, seed=5)
    local = sccr.SCCR(**FAST).fit(X)
    remote = sccr.SCCR(backend="dask", client=client, **FAST).fit(X)
    np.testing.assert_allclose(remote.imputed_, local.imputed_, rtol=1e-6, atol=1e-7)
    assert (remote.cell_graph_ != local.cell_graph_).nnz == 0
    assert (remote.gene_graph_ != local.gene_graph_).nnz == 0
    assert remote.scheduler_ == client.scheduler.address and local.scheduler_ is None
    twin = clone(remote)  # shares the live client instead of copying it
    assert twin.client is client and twin.get_params()["k"] == FAST["k"] and not hasattr(twin, "imputed_")


def test_knn_ties_match_local(client):
    """Duplicated rows tie exactly: the workers' blocks break ties as the local search does."""
    rng = np.random.default_rng(0)
    M = np.repeat(rng.random((40, 12), dtype=np.float32), 5, axis=0)[rng.permutation(200)]
    want = knn_graph(M, 7, sym=True)
    with executing(Execution(remote=DaskExecutor(client))):
        got = knn_graph(M, 7, sym=True)
    assert (got != want).nnz == 0


def test_propagation_keeps_a_bounded_number_of_blocks_out(client):
    """The client never has more blocks loaded but not yet stored than the executor's limit."""
    rng = np.random.default_rng(1)
    A = knn_graph(rng.random((80, 6), dtype=np.float32), 4, sym=True)
    blocks = [rng.random((80, 3), dtype=np.float32) for _ in range(25)]
    executor = DaskExecutor(client)
    out, outstanding, most = {}, set(), 0

    def load(i):
        nonlocal most
        outstanding.add(i)
        most = max(most, len(outstanding))
        return blocks[i], None

    def store(i, block):
        outstanding.remove(i)
        out[i] = block

    with executing(Execution(remote=executor)):
        propagate_chunks(A, len(blocks), load, store, n_iter=5, hard=True)
    assert most <= executor.in_flight < len(blocks)
    assert sorted(out) == list(range(len(blocks)))
    for i, block in enumerate(blocks):
        np.testing.assert_array_equal(out[i], propagate_block(A, block, None, n_iter=5, hard=True, beta=1.0))


def test_active_client_is_used(data, cluster):
    local = sccr.impute(data, copy=True, **FAST)
    with distributed.Client(cluster) as active:  # becomes the default client
        remote = sccr.impute(data, copy=True, backend="dask", **FAST)
        assert remote.uns["sccr"]["params"]["scheduler"] == active.scheduler.address
    assert_same_run(local, remote)


def test_no_client_is_a_clear_error(data):
    with pytest.raises(sccr.InputError, match="no active dask.distributed Client"):
        sccr.impute(data, copy=True, backend="dask", **FAST)


def test_bad_backend_and_stray_client(data, client):
    with pytest.raises(sccr.InputError, match="backend must be one of local, dask"):
        sccr.impute(data, copy=True, backend="spark", **FAST)
    with pytest.raises(sccr.InputError, match="only used with backend='dask'"):
        sccr.impute(data, copy=True, client=client, **FAST)


def run_cli(tmp_path, output: str, *extra: str) -> ad.AnnData:
    code = main(
        [
            "impute",
            str(tmp_path / "in.h5ad"),
            str(tmp_path / output),
            "--k",
            "5",
            "--n-iter",
            "8",
            "--n-jobs",
            "1",
            "--quiet",
            *extra,
        ]
    )
    assert code == 0
    return ad.read_h5ad(tmp_path / output)


def test_cli_on_scheduler_and_on_own_local_cluster(tmp_path, data, cluster, capsys):
    data.write_h5ad(tmp_path / "in.h5ad")
    local = run_cli(tmp_path, "local.h5ad")
    on_scheduler = run_cli(tmp_path, "dask.h5ad", "--backend", "dask", "--scheduler", cluster.scheduler_address)
    assert_same_run(local, on_scheduler)
    assert on_scheduler.uns["sccr"]["params"]["scheduler"] == cluster.scheduler_address
    own = run_cli(tmp_path, "own.h5ad", "--backend", "dask")  # starts, uses and closes a LocalCluster
    assert_same_run(local, own)
    assert own.uns["sccr"]["params"]["scheduler"] not in (None, cluster.scheduler_address)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:1"], ["cannot connect", "tcp://127.0.0.1:1"]),
        (["--backend", "dask", "--scheduler", "no-port"], ["cannot connect", "no-port"]),
        (["--scheduler", "tcp://127.0.0.1:1"], ["--scheduler is only used with --backend dask"]),
    ],
)
def test_cli_bad_scheduler_is_one_line_error(tmp_path, data, capsys, extra, words):
    data.write_h5ad(tmp_path / "in.h5ad")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["impute", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sccr: error:"), err
    for word in words:
        assert word in lines[0], (word, err)
    assert not (tmp_path / "out.h5ad").exists()
