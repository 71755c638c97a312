"""Command line: ``sccr impute`` and ``sccr demo`` (run in-process through sccr.cli.main)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_counts, make_expression
from sccr.cli import main

FAST = ["--k", "5", "--n-iter", "5", "--n-jobs", "1", "--quiet"]
API_FAST = dict(k=5, n_iter=5, n_jobs=1)


@pytest.fixture(autouse=True)
def _restore_showwarning(monkeypatch):
    """main() installs its own warnings.showwarning; undo that after every test."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def workdir(tmp_path):
    """A folder holding in.h5ad: 120 synthetic cells x 40 genes, log-normalised, with a 'log' layer."""
    X = make_expression(120, 40, seed=7)
    a = ad.AnnData(X=sp.csr_matrix(X), obs={"celltype": (np.arange(120) % 3).astype(str)})
    a.obs_names = [f"c{i}" for i in range(120)]
    a.var_names = [f"g{j}" for j in range(40)]
    a.layers["log"] = X * 0.5
    a.write_h5ad(tmp_path / "in.h5ad")
    return tmp_path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sccr: error:"), err
    for word in words:
        assert word in lines[0], (word, err)


def files_in(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- success -------------------------------------------------------------------------


def test_impute_writes_output_and_leaves_input(workdir, capsys):
    src, dst = workdir / "in.h5ad", workdir / "out.h5ad"
    before = digest(src)
    mtime = os.stat(src).st_mtime_ns
    code, _, err = run_cli(capsys, "impute", src, dst, *FAST)
    assert code == 0, err
    assert digest(src) == before and os.stat(src).st_mtime_ns == mtime
    out = ad.read_h5ad(dst)
    assert out.layers["sccr"].dtype == np.float32 and out.layers["sccr"].shape == (120, 40)
    assert "sccr_connectivities" in out.obsp and "sccr_gene_graph" in out.varp
    assert out.uns["sccr"]["params"]["k"] == 5
    assert files_in(workdir) == {"in.h5ad", "out.h5ad"}  # no temporary file left


def test_cli_equals_api(workdir, capsys):
    src, dst = workdir / "in.h5ad", workdir / "out.h5ad"
    assert run_cli(capsys, "impute", src, dst, *FAST)[0] == 0
    expected = ad.read_h5ad(src)
    sccr.impute(expected, **API_FAST)
    got = ad.read_h5ad(dst)
    np.testing.assert_array_equal(got.layers["sccr"], expected.layers["sccr"])
    np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
    assert (got.obsp["sccr_connectivities"] != expected.obsp["sccr_connectivities"]).nnz == 0


def test_output_keeps_everything_the_input_had(workdir, capsys):
    """OUTPUT is INPUT plus sccr's entries: other layers, obs columns and existing entries carry over."""
    src, dst = workdir / "in.h5ad", workdir / "out.h5ad"
    a = ad.read_h5ad(src)
    a.obsm["X_pca"] = np.ones((120, 2), dtype=np.float32)
    a.uns["note"] = "kept"
    a.layers["sccr"] = np.zeros((120, 40), dtype=np.float32)  # replaced, as scanpy does
    a.write_h5ad(src)
    assert run_cli(capsys, "impute", src, dst, *FAST)[0] == 0
    got = ad.read_h5ad(dst)
    np.testing.assert_array_equal(got.layers["log"], a.layers["log"])
    np.testing.assert_array_equal(got.obsm["X_pca"], a.obsm["X_pca"])
    assert got.uns["note"] == "kept" and list(got.obs["celltype"]) == list(a.obs["celltype"])
    assert (got.layers["sccr"] != 0).any()


def test_memory_budget_streams_out_of_core_with_the_same_output(workdir, capsys, monkeypatch):
    """A budget only an out-of-core run fits: same layer, bit for bit; scratch files removed."""
    from sccr._engine.memory import SKIP_ENV, estimate_peak_bytes

    monkeypatch.delenv(SKIP_ENV, raising=False)
    src, scratch = workdir / "in.h5ad", workdir / "scratch"
    scratch.mkdir()
    nnz = ad.read_h5ad(src).X.nnz
    budget = estimate_peak_bytes(
        120, 40, nnz, method="sccr", k=5, k_gene=2, n_jobs=1, out_of_core=True, output_in_memory=False
    )
    code, _, err = run_cli(
        capsys,
        "impute",
        src,
        workdir / "a.h5ad",
        "--k",
        "5",
        "--n-iter",
        "5",
        "--n-jobs",
        "1",
        "--memory-budget",
        str(budget),
        "--scratch-dir",
        scratch,
    )
    assert code == 0 and "out of core" in err, err
    assert run_cli(capsys, "impute", src, workdir / "b.h5ad", *FAST)[0] == 0
    out_of_core, in_memory = ad.read_h5ad(workdir / "a.h5ad"), ad.read_h5ad(workdir / "b.h5ad")
    np.testing.assert_array_equal(out_of_core.layers["sccr"], in_memory.layers["sccr"])
    assert out_of_core.uns["sccr"]["params"]["out_of_core"] and not in_memory.uns["sccr"]["params"]["out_of_core"]
    assert list(scratch.iterdir()) == []


def test_zarr_in_zarr_out_with_the_input_streamed(workdir, capsys, monkeypatch):
    """A .zarr store in, a .zarr store out; a budget only a streamed input fits; same layer as in memory."""
    from sccr._engine.memory import SKIP_ENV, estimate_peak_bytes

    monkeypatch.delenv(SKIP_ENV, raising=False)
    ad.read_h5ad(workdir / "in.h5ad").write_zarr(workdir / "in.zarr")
    budget = estimate_peak_bytes(
        120,
        40,
        None,
        method="sccr",
        k=5,
        k_gene=2,
        n_jobs=1,
        out_of_core=True,
        output_in_memory=False,
        input_on_disk=True,
    )
    code, _, err = run_cli(
        capsys,
        "impute",
        workdir / "in.zarr",
        workdir / "out.zarr",
        "--k",
        "5",
        "--n-iter",
        "5",
        "--n-jobs",
        "1",
        "--memory-budget",
        str(budget),
    )
    assert code == 0 and "out of core, input streamed" in err, err
    assert run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "b.h5ad", *FAST)[0] == 0
    np.testing.assert_array_equal(
        ad.read_zarr(workdir / "out.zarr").layers["sccr"], ad.read_h5ad(workdir / "b.h5ad").layers["sccr"]
    )
    assert files_in(workdir) == {"in.h5ad", "in.zarr", "out.zarr", "b.h5ad"}


def test_memory_budget_too_small_is_refused(workdir, capsys):
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *FAST, "--memory-budget", "1K")
    assert code == 2
    assert_one_line_error(err, "even out of core", "but the memory budget is 1.0 KiB")
    assert files_in(workdir) == {"in.h5ad"}


def test_options_are_forwarded(workdir, capsys):
    src, dst = workdir / "in.h5ad", workdir / "out.h5ad"
    code, _, err = run_cli(
        capsys,
        "impute",
        src,
        dst,
        *FAST,
        "--layer",
        "log",
        "--key-added",
        "imp",
        "--method",
        "scfp",
        "--gamma",
        "0.5",
        "--beta",
        "0.9",
        "--no-sym-final",
    )
    assert code == 0, err
    got = ad.read_h5ad(dst)
    params = got.uns["imp"]["params"]
    assert (params["layer"], params["method"], params["gamma"], params["beta"], params["sym_final"]) == (
        "log",
        "scfp",
        0.5,
        0.9,
        False,
    )
    expected = sccr.SCCR(method="scfp", gamma=0.5, beta=0.9, sym_final=False, **API_FAST).fit_transform(
        ad.read_h5ad(src).layers["log"]
    )
    np.testing.assert_array_equal(got.layers["imp"], expected)
    assert "imp_gene_graph" not in got.varp and "sccr" not in got.layers


def test_progress_messages_unless_quiet(workdir, capsys):
    src = workdir / "in.h5ad"
    code, _, err = run_cli(capsys, "impute", src, workdir / "a.h5ad", "--k", "5", "--n-iter", "5")
    assert code == 0 and "imputed 120 cells x 40 genes" in err and "wrote" in err
    code, out, err = run_cli(capsys, "impute", src, workdir / "b.h5ad", *FAST)
    assert code == 0 and err == "" and out == ""


def test_preprocess_paper_on_raw_counts(tmp_path, capsys):
    counts = make_counts(120, 60, seed=8)
    a = ad.AnnData(X=sp.csr_matrix(counts))
    a.var_names = [f"g{j}" for j in range(60)]
    src, dst = tmp_path / "counts.h5ad", tmp_path / "out.h5ad"
    a.write_h5ad(src)
    code, _, err = run_cli(capsys, "impute", src, dst, *FAST, "--preprocess", "paper", "--n-top-genes", "30")
    assert code == 0, err
    got = ad.read_h5ad(dst)
    assert got.shape[1] == 30 and "counts" in got.layers and "sccr_preprocess" in got.uns
    expected = sccr.pp.preprocess_paper(ad.read_h5ad(src), n_top_genes=30)
    sccr.impute(expected, **API_FAST)
    np.testing.assert_array_equal(got.layers["sccr"], expected.layers["sccr"])


def test_raw_counts_without_preprocess_warn_on_one_line(tmp_path, capsys):
    a = ad.AnnData(X=sp.csr_matrix(make_counts(60, 30, seed=9)))
    a.write_h5ad(tmp_path / "counts.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = run_cli(capsys, "impute", tmp_path / "counts.h5ad", tmp_path / "out.h5ad", *FAST)
    assert code == 0
    warning_lines = [line for line in err.splitlines() if line.startswith("sccr: warning:")]
    assert len(warning_lines) == 1 and "raw counts" in warning_lines[0]


# --- refusals ------------------------------------------------------------------------


def test_existing_output_refused_unless_force(workdir, capsys):
    src, dst = workdir / "in.h5ad", workdir / "out.h5ad"
    dst.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "impute", src, dst, *FAST)
    assert code == 2
    assert_one_line_error(err, "already exists", "--force")
    assert dst.read_bytes() == b"precious"
    code, _, err = run_cli(capsys, "impute", src, dst, *FAST, "--force")
    assert code == 0, err
    assert "sccr" in ad.read_h5ad(dst).layers
    assert files_in(workdir) == {"in.h5ad", "out.h5ad"}


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_output_equal_to_input_refused(workdir, capsys, spelling):
    src = workdir / "in.h5ad"
    before = digest(src)
    if spelling == "same":
        dst = src
    elif spelling == "dotted":
        (workdir / "sub").mkdir()
        dst = workdir / "sub" / ".." / "in.h5ad"
    else:
        dst = workdir / "link.h5ad"
        dst.symlink_to(src)
    for extra in ([], ["--force"]):
        code, _, err = run_cli(capsys, "impute", src, dst, *FAST, *extra)
        assert code == 2
        assert_one_line_error(err, "is the input file")
    assert digest(src) == before


def test_missing_input(tmp_path, capsys):
    code, _, err = run_cli(capsys, "impute", tmp_path / "nope.h5ad", tmp_path / "out.h5ad", *FAST)
    assert code == 2
    assert_one_line_error(err, "does not exist")
    assert files_in(tmp_path) == set()


def test_missing_input_with_existing_output(tmp_path, capsys):
    (tmp_path / "out.h5ad").write_bytes(b"old")
    code, _, err = run_cli(capsys, "impute", tmp_path / "nope.h5ad", tmp_path / "out.h5ad", *FAST)
    assert code == 2
    assert_one_line_error(err)
    assert "internal fault" not in err


def test_input_is_a_folder(tmp_path, capsys):
    (tmp_path / "dir.h5ad").mkdir()
    code, _, err = run_cli(capsys, "impute", tmp_path / "dir.h5ad", tmp_path / "out.h5ad", *FAST)
    assert code == 2
    assert_one_line_error(err, "is a folder")


def test_non_hdf5_input(tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    src.write_text("cell,gene\n1,2\n")
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *FAST)
    assert code == 2
    assert_one_line_error(err, "not an HDF5")
    assert files_in(tmp_path) == {"in.h5ad"}


def test_hdf5_that_is_not_anndata(tmp_path, capsys):
    import h5py

    src = tmp_path / "in.h5ad"
    h5py.File(src, "w").close()
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *FAST)
    assert code == 2
    assert_one_line_error(err, "cannot read")


def test_unknown_layer(workdir, capsys):
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *FAST, "--layer", "nope")
    assert code == 2
    assert_one_line_error(err, "layer 'nope' not found")
    assert files_in(workdir) == {"in.h5ad"}


@pytest.mark.parametrize(
    "option,value,word",
    [
        ("--k", "0", "k must be"),
        ("--n-iter", "-1", "n_iter must be"),
        ("--gamma", "2", "gamma must be"),
        ("--n-jobs", "0", "n_jobs must be"),
    ],
)
def test_bad_option_value(workdir, capsys, option, value, word):
    args = [a for a in FAST]
    if option in args:
        i = args.index(option)
        del args[i : i + 2]
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *args, option, value)
    assert code == 2
    assert_one_line_error(err, word)
    assert files_in(workdir) == {"in.h5ad"}


@pytest.mark.parametrize(
    "argv",
    [
        ["impute", "a.h5ad", "b.h5ad", "--k", "abc"],
        ["impute", "a.h5ad", "b.h5ad", "--method", "magic"],
        ["impute", "a.h5ad"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert_one_line_error(capsys.readouterr().err)


def test_missing_output_folder(workdir, capsys):
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "no" / "out.h5ad", *FAST)
    assert code == 2
    assert_one_line_error(err, "does not exist")


def test_failed_write_leaves_nothing(workdir, capsys, monkeypatch):
    def broken_write(*args, **kwargs):  # the temporary output holds the imputed layer by now
        raise OSError("disk full")

    monkeypatch.setattr("sccr._anndata.write_element", broken_write)
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *FAST)
    assert code == 1
    assert_one_line_error(err, "internal fault", "disk full")
    assert files_in(workdir) == {"in.h5ad"}


def test_failed_write_keeps_existing_output_with_force(workdir, capsys, monkeypatch):
    dst = workdir / "out.h5ad"
    dst.write_bytes(b"previous")

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("sccr._anndata.write_element", broken_write)
    code, _, _ = run_cli(capsys, "impute", workdir / "in.h5ad", dst, *FAST, "--force")
    assert code == 1
    assert dst.read_bytes() == b"previous"
    assert files_in(workdir) == {"in.h5ad", "out.h5ad"}


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(sccr.InputError):
        main(["--debug", "impute", str(tmp_path / "nope.h5ad"), str(tmp_path / "out.h5ad")])


def test_output_permissions_follow_umask(workdir, capsys):
    old = os.umask(0o022)
    try:
        assert run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *FAST)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(workdir / "out.h5ad").st_mode) == 0o644


# --- help, version, demo --------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["impute", "--help"], ["demo", "--help"]])
def test_help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sccr")
    if argv[0] == "impute":
        for option in ("--layer", "--key-added", "--preprocess", "--force", "--n-jobs"):
            assert option in out


def test_version_subprocess():
    proc = subprocess.run([sys.executable, "-m", "sccr.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"sccr {sccr.__version__}"


def test_demo_runs_on_small_data(monkeypatch, capsys):
    counts = make_counts(90, 30, seed=10)
    small = ad.AnnData(X=sp.csr_matrix(counts), obs={"celltype": (np.arange(90) % 3).astype(str)})
    small.var_names = [f"g{j}" for j in range(30)]
    monkeypatch.setattr("sccr._benchmark.demo.worm_neuron", lambda: small)
    code, out, err = run_cli(capsys, "demo", "--seeds", "0", "--n-jobs", "1")
    assert code == 0, err
    assert "90 cells x 30 genes" in out
    assert "ARI" in out and "raw" in out and "sccr" in out


def test_demo_bad_seeds(capsys):
    code, _, err = run_cli(capsys, "demo", "--seeds", "zero,one")
    assert code == 2
    assert_one_line_error(err, "--seeds")


def test_relative_paths(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    code, _, err = run_cli(capsys, "impute", "in.h5ad", "out.h5ad", *FAST)
    assert code == 0, err
    assert files_in(workdir) == {"in.h5ad", "out.h5ad"}


def test_interrupt_exits_130_and_leaves_nothing(workdir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sccr._engine.entry.Job.execute", interrupted)
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *FAST)
    assert code == 130
    assert_one_line_error(err, "interrupted")
    assert files_in(workdir) == {"in.h5ad"}


def test_output_folder_with_force_is_a_usage_error(workdir, capsys):
    (workdir / "out.h5ad").mkdir()
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", *FAST, "--force")
    assert code == 2
    assert_one_line_error(err)
    assert "internal fault" not in err


# --- rough edges met as a new user ----------------------------------------------------------


def test_output_of_another_format_is_refused(workdir, capsys):
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.csv", *FAST)
    assert code == 2
    assert_one_line_error(err, "must end in .h5ad", ".zarr", "out.h5ad")
    assert files_in(workdir) == {"in.h5ad"}


def test_paper_preprocessing_refuses_log_normalised_input(workdir, capsys):
    code, _, err = run_cli(capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", "--preprocess", "paper", *FAST)
    assert code == 2
    assert_one_line_error(err, "expects raw counts", "non-integer values", "--preprocess none")
    assert files_in(workdir) == {"in.h5ad"}


def test_options_are_checked_before_the_paper_preprocessing(workdir, capsys, monkeypatch):
    monkeypatch.setattr("sccr._anndata.preprocess_paper", lambda *a, **k: pytest.fail("preprocessed before checking"))
    code, _, err = run_cli(
        capsys, "impute", workdir / "in.h5ad", workdir / "out.h5ad", "--preprocess", "paper", "--k", "0"
    )
    assert code == 2
    assert_one_line_error(err, "k must be an integer >= 1")


def test_help_names_both_formats(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert ".h5ad or .zarr in, .h5ad or .zarr out" in " ".join(capsys.readouterr().out.split())


def test_impute_on_a_matrix_points_to_the_array_api(workdir):
    adata = ad.read_h5ad(workdir / "in.h5ad")
    with pytest.raises(
        sccr.InputError, match=r"sccr.impute takes an AnnData, got csr_matrix; .*sccr.SCCR\(\).fit_transform\(X\)"
    ):
        sccr.impute(adata.X)
