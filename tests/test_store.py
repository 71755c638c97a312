"""Matrix stores: scratch files of column panels, and the pipeline run out of core."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from helpers import make_expression
from sccr._engine.execution import Execution, executing
from sccr._engine.matrix import DenseMatrix, PanelFile, Workspace
from sccr._engine.pipeline import run_stages
from sccr._options import Options


@pytest.fixture
def M():
    return np.random.default_rng(0).random((37, 23), dtype=np.float32)


@pytest.mark.parametrize("width", [1, 4, 5, 23, 64])
def test_panel_file_round_trips_columns_and_rows(tmp_path, M, width):
    f = PanelFile(tmp_path / "m.f32", M.shape, width)
    for start in range(0, M.shape[1], width):
        f.write_columns(start, M[:, start : start + width])
    np.testing.assert_array_equal(f.to_array(), M)
    np.testing.assert_array_equal(f.rows(5, 11), M[5:11])
    np.testing.assert_array_equal(f.rows(30, 99), M[30:])  # past the end: the rows that exist
    np.testing.assert_array_equal(f.columns(0, width), M[:, :width])
    np.testing.assert_array_equal(np.vstack([b for _, b in f.row_blocks(10)]), M)
    g = PanelFile(tmp_path / "g.f32", M.shape, width)
    for start in range(0, M.shape[0], 8):  # written by rows, read by columns
        g.write_rows(start, M[start : start + 8])
    for start in range(0, M.shape[1], width):
        np.testing.assert_array_equal(g.columns(start, start + width), M[:, start : start + width])
    f.close(), g.close()


@pytest.mark.parametrize("n_jobs", [1, 2, 3])
def test_panel_file_reads_in_row_pieces_on_threads(tmp_path, M, n_jobs, monkeypatch):
    # Blocks of columns across panels, and of rows, are read in pieces of rows on the run's
    # threads: the same block, every piece in place, last pieces shorter, the last panel narrower.
    monkeypatch.setattr("sccr._engine.matrix.PANEL_READ_ROWS", 8)
    f = PanelFile(tmp_path / "m.f32", M.shape, 5)
    for start in range(0, M.shape[1], 5):
        f.write_columns(start, M[:, start : start + 5])
    with executing(Execution(n_jobs=n_jobs)):
        for start, stop in [(0, 23), (5, 15), (10, 99), (20, 23)]:
            np.testing.assert_array_equal(f.columns(start, stop), M[:, start:stop])
        for start, stop in [(0, 37), (3, 30), (8, 16), (36, 37), (5, 5)]:
            np.testing.assert_array_equal(f.rows(start, stop), M[start:stop])
        np.testing.assert_array_equal(np.vstack([b for _, b in f.row_blocks(10)]), M)
    f.close()


def test_panel_file_refuses_unaligned_column_blocks(tmp_path, M):
    f = PanelFile(tmp_path / "m.f32", M.shape, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        f.columns(2, 6)
    f.close()


def test_slice_store_is_a_view_of_its_array(M):
    store = DenseMatrix(M.copy())
    store.write_columns(3, np.zeros((37, 2), dtype=np.float32))
    assert store.to_array() is store.array and (store.array[:, 3:5] == 0).all()
    np.testing.assert_array_equal(store.rows(0, 2), store.array[:2])


def test_workspace_removes_its_files_also_after_an_error(tmp_path):
    with pytest.raises(RuntimeError), Workspace(out_of_core=True, scratch_dir=tmp_path) as ws:
        a = ws.new("a", (10, 3))
        ws.new("b", (10, 3))
        assert len(list(tmp_path.iterdir())) == 1 and a.path.exists()
        ws.free(a)
        assert not a.path.exists()
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_in_memory_workspace_makes_arrays():
    with Workspace() as ws:
        assert isinstance(ws.new("a", (4, 2)).array, np.ndarray)


def test_freeing_an_in_memory_matrix_releases_its_array():
    """The pipeline frees D0 and C when it no longer needs them: in memory too, they must go."""
    import weakref

    with Workspace() as ws:
        a, b = ws.new("a", (4, 2)), ws.new("b", (4, 2))
        alive = weakref.ref(a.array)
        ws.free(a)
        assert a.array is None and alive() is None
        assert b.array is not None
        foreign = DenseMatrix(np.zeros((4, 2), dtype=np.float32))
        ws.free(foreign)  # not made here: left alone
        assert foreign.array is not None


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_out_of_core_equals_in_memory(tmp_path, method, layout):
    """Same chunks, same arithmetic: the scratch files change where blocks live, not one bit of the result."""
    X = make_expression(seed=4)
    X = sp.csr_matrix(X) if layout == "sparse" else X
    p = Options(method=method, k=5, n_iter=6, n_jobs=2)
    with executing(Execution(n_jobs=2)):
        plain = run_stages(X, p, chunk=8)
        with Workspace(out_of_core=True, scratch_dir=tmp_path) as ws:
            out = ws.new("out", X.shape, 8)
            spilled = run_stages(X, p, workspace=ws, out=out, chunk=8)
            assert spilled.imputed is out
            np.testing.assert_array_equal(out.to_array(), plain.imputed)
    assert (spilled.cell_graph != plain.cell_graph).nnz == 0
    if method != "scfp":
        assert (spilled.gene_graph != plain.gene_graph).nnz == 0
