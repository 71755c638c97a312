"""A battery of bad inputs, each through the array API, the AnnData API and the command line.

Every case states its outcome: an :class:`sccr.InputError` whose message holds a
phrase, a warning (then the run completes), or plain acceptance with float32
output. On the command line an error must be exit code 2 and one line on stderr
starting ``sccr: error:``, with no traceback, no OUTPUT or temporary file left
behind and INPUT byte-identical. (``sccr benchmark``'s unknown label key belongs
with that subcommand's tests.)
"""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_counts, make_expression
from sccr.cli import main

N_CELLS, N_GENES = 60, 30
API = dict(k=5, n_iter=2, n_jobs=1)
CLI = ["--k", "5", "--n-iter", "2", "--n-jobs", "1", "--quiet"]


def expression() -> np.ndarray:
    """Log-normalised float32, no cell or gene without a non-zero value."""
    return make_expression(N_CELLS, N_GENES, seed=2)


def with_entry(value: float) -> np.ndarray:
    X = expression()
    X[3, 4] = value
    return X


def zero_cells() -> np.ndarray:
    X = expression()
    X[[3, 7]] = 0
    return X


def zero_genes() -> np.ndarray:
    X = expression()
    X[:, [4]] = 0
    return X


@dataclass(frozen=True)
class Case:
    """One bad input and its expected outcome (``error``, ``warning`` or ``ok``)."""

    id: str
    matrix: Callable[[], object]
    outcome: str
    phrase: str = ""
    warning: type[Warning] = sccr.InputWarning
    params: dict = field(default_factory=dict)
    #: What the command line gets instead of ``params`` (None: the case is API-only).
    argv: tuple[str, ...] | None = ()
    #: The command line's phrase when it differs (argparse checks choices itself).
    cli_phrase: str | None = None


MATRIX_CASES = [
    Case("nan", lambda: with_entry(np.nan), "error", "NaN or infinite"),
    Case("inf", lambda: with_entry(np.inf), "error", "NaN or infinite"),
    Case("nan-sparse", lambda: sp.csr_matrix(with_entry(np.nan)), "error", "NaN or infinite"),
    Case("negative-scaled", lambda: expression() - expression().mean(axis=0), "error", "negative values"),
    Case(
        "raw-counts", lambda: make_counts(N_CELLS, N_GENES, seed=3), "warning", "--preprocess paper", sccr.CountsWarning
    ),
    Case("all-zero-cells", zero_cells, "warning", "2 of 60 cells"),
    Case("all-zero-genes", zero_genes, "warning", "1 of 30 genes"),
    Case("all-zero-matrix", lambda: np.zeros((N_CELLS, N_GENES), np.float32), "error", "no non-zero value"),
    Case("empty-no-cells", lambda: np.zeros((0, N_GENES), np.float32), "error", "empty"),
    Case("empty-no-genes", lambda: sp.csr_matrix((N_CELLS, 0), dtype=np.float32), "error", "empty"),
    Case("fewer-cells-than-k+1", lambda: expression()[:5], "error", "need at least k + 1 = 6 cells"),
    Case("single-gene", lambda: expression()[:, :1], "error", "at least 2 genes"),
    Case("fewer-genes-than-k_gene+1", lambda: expression()[:, :2], "error", "k_gene + 1 = 3 genes"),
    Case(
        "int64-counts",
        lambda: make_counts(N_CELLS, N_GENES, seed=3).astype(np.int64),
        "warning",
        "raw counts",
        sccr.CountsWarning,
    ),
    Case(
        "int32-counts",
        lambda: sp.csr_matrix(make_counts(N_CELLS, N_GENES, seed=3).astype(np.int32)),
        "warning",
        "raw counts",
        sccr.CountsWarning,
    ),
    Case("float16", lambda: expression().astype(np.float16), "ok"),
    Case("float64", lambda: expression().astype(np.float64), "ok"),
    Case("bool", lambda: expression() > 0, "ok"),
    Case("complex", lambda: expression().astype(np.complex64), "error", "complex dtype", argv=None),
    Case("strings", lambda: expression().astype(str), "error", "expected numbers", argv=None),
    Case("dense", expression, "ok"),
    Case("csr", lambda: sp.csr_matrix(expression()), "ok"),
    Case("csc", lambda: sp.csc_matrix(expression()), "ok"),
    Case("coo", lambda: sp.coo_matrix(expression()), "ok"),
    Case("csr_array", lambda: sp.csr_array(expression()), "ok"),
    Case("k=0", expression, "error", "k must be an integer >= 1", params=dict(k=0), argv=("--k", "0")),
    Case(
        "k_gene=0", expression, "error", "k_gene must be an integer >= 1", params=dict(k_gene=0), argv=("--k-gene", "0")
    ),
    Case(
        "n_iter<0",
        expression,
        "error",
        "n_iter must be an integer >= 0",
        params=dict(n_iter=-1),
        argv=("--n-iter", "-1"),
    ),
    Case("alpha>1", expression, "error", "alpha must be in [0, 1]", params=dict(alpha=1.5), argv=("--alpha", "1.5")),
    Case("beta<0", expression, "error", "beta must be in [0, 1]", params=dict(beta=-0.1), argv=("--beta", "-0.1")),
    Case(
        "gamma-nan",
        expression,
        "error",
        "gamma must be in [0, 1]",
        params=dict(gamma=float("nan")),
        argv=("--gamma", "nan"),
    ),
    Case(
        "method-unknown",
        expression,
        "error",
        "method must be one of",
        params=dict(method="magic"),
        argv=("--method", "magic"),
        cli_phrase="invalid choice: 'magic'",
    ),
    Case(
        "knn-unknown",
        expression,
        "error",
        "knn must be one of",
        params=dict(knn="fast"),
        argv=("--knn", "fast"),
        cli_phrase="invalid choice: 'fast'",
    ),
    Case(
        "n_jobs=0",
        expression,
        "error",
        "n_jobs must be a positive integer",
        params=dict(n_jobs=0),
        argv=("--n-jobs", "0"),
    ),
]


def named(X) -> ad.AnnData:
    a = ad.AnnData(X=X)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    return a


def check_outcome(case: Case, call: Callable[[], object]):
    """Run ``call`` and check the case's outcome; return what it returned."""
    if case.outcome == "error":
        with pytest.raises(sccr.InputError) as err:
            call()
        assert case.phrase in str(err.value) and "\n" not in str(err.value)
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    ours = [w for w in caught if issubclass(w.category, sccr.InputWarning)]
    if case.outcome == "ok":
        assert ours == [], [str(w.message) for w in ours]
    else:
        assert any(issubclass(w.category, case.warning) and case.phrase in str(w.message) for w in ours), [
            str(w.message) for w in caught
        ]
    return result


def as_dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.asarray(M)


@pytest.mark.parametrize("case", MATRIX_CASES, ids=lambda c: c.id)
def test_array_api(case):
    M = case.matrix()
    before = copy.deepcopy(M)
    out = check_outcome(case, lambda: sccr.SCCR(**{**API, **case.params}).fit_transform(M))
    if out is not None:
        assert out.dtype == np.float32 and out.shape == (N_CELLS, N_GENES) and np.isfinite(out).all()
    assert type(M) is type(before) and M.dtype == before.dtype  # the caller's matrix is untouched
    np.testing.assert_array_equal(as_dense(M), as_dense(before))


@pytest.mark.parametrize("case", MATRIX_CASES, ids=lambda c: c.id)
def test_anndata_api(case):
    if case.id in ("strings", "coo"):
        pytest.skip("AnnData itself refuses this matrix type")
    adata = named(case.matrix())
    out = check_outcome(case, lambda: sccr.impute(adata, copy=True, **{**API, **case.params}))
    if out is None:
        assert "sccr" not in adata.layers and "sccr" not in adata.uns
    else:
        assert out.layers["sccr"].dtype == np.float32 and np.isfinite(out.layers["sccr"]).all()


# --- the command line --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_showwarning(monkeypatch):
    """main() installs its own warnings.showwarning; undo that after every test."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of ``sccr ARGV`` run in this process, every warning shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, phrase: str) -> None:
    """Exit 2, one line on stderr starting ``sccr: error:`` that holds ``phrase``, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sccr: error:"), err
    assert phrase in lines[0], err


def write_input(folder, X, **layers) -> tuple:
    """``folder/in.h5ad`` holding ``X`` (and ``layers``); returns its path and its digest.

    CSR and CSC are written as they are; COO (which AnnData refuses) as CSR.
    """
    if sp.issparse(X):
        X = X if X.format in ("csr", "csc") else sp.csr_matrix(X)
    adata = named(X if sp.issparse(X) else np.asarray(X))
    for name, value in layers.items():
        adata.layers[name] = value
    path = folder / "in.h5ad"
    adata.write_h5ad(path)
    return path, digest(path)


def cli_options(case: Case) -> list[str]:
    """CLI defaults, with the case's option replacing its default."""
    options = list(CLI)
    if case.argv and case.argv[0] in options:
        i = options.index(case.argv[0])
        del options[i : i + 2]
    return options + list(case.argv or ())


@pytest.mark.parametrize("case", [c for c in MATRIX_CASES if c.argv is not None], ids=lambda c: c.id)
def test_cli(case, tmp_path, capsys):
    src, before = write_input(tmp_path, case.matrix())
    dst = tmp_path / "out.h5ad"
    code, err = run_cli(capsys, "impute", src, dst, *cli_options(case))
    assert digest(src) == before
    if case.outcome == "error":
        assert_refused(code, err, case.cli_phrase or case.phrase)
        assert {p.name for p in tmp_path.iterdir()} == {"in.h5ad"}
        return
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("sccr: warning:")]
    assert (warned == []) if case.outcome == "ok" else any(case.phrase in line for line in warned), err
    assert "Traceback" not in err
    out = ad.read_h5ad(dst)
    assert out.layers["sccr"].dtype == np.float32 and out.layers["sccr"].shape == (N_CELLS, N_GENES)
    assert {p.name for p in tmp_path.iterdir()} == {"in.h5ad", "out.h5ad"}


# --- AnnData objects ---------------------------------------------------------------------


@pytest.fixture
def adata() -> ad.AnnData:
    a = named(sp.csr_matrix(expression()))
    a.layers["log"] = expression()
    return a


@pytest.mark.parametrize(
    "layer,key_added,phrase",
    [
        ("nope", "sccr", "layer 'nope' not found in adata.layers (available: 'log')"),
        ("log", "log", "would overwrite the input layer"),
        (None, "", "key_added must be a non-empty name"),
        (None, "a/b", "without '/'"),
        (None, 3, "key_added must be"),
    ],
)
def test_layer_and_key(adata, layer, key_added, phrase):
    with pytest.raises(sccr.InputError) as err:
        sccr.impute(adata, layer=layer, key_added=key_added, **API)
    assert phrase in str(err.value)
    assert set(adata.layers) == {"log"}


def test_existing_key_is_replaced(adata):
    adata.layers["sccr"] = np.zeros(adata.shape, np.float32)
    sccr.impute(adata, **API)
    assert adata.layers["sccr"].any()


def test_cli_key_clash_with_layer(tmp_path, capsys):
    src, before = write_input(tmp_path, expression(), log=expression())
    code, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI, "--layer", "log", "--key-added", "log")
    assert_refused(code, err, "would overwrite the input layer")
    assert digest(src) == before and not (tmp_path / "out.h5ad").exists()


def test_x_none(adata):
    adata.X = None
    with pytest.raises(sccr.InputError, match="adata.X is empty"):
        sccr.impute(adata, **API)


@pytest.mark.parametrize("axis", ["obs", "var"])
def test_duplicate_names_warn(adata, axis):
    names = list(getattr(adata, f"{axis}_names"))
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's own warning about non-unique names
        setattr(adata, f"{axis}_names", names)
    with pytest.warns(sccr.InputWarning, match=f"1 duplicate {axis}_names.*{axis}_names_make_unique"):
        sccr.impute(adata, **API)
    assert adata.layers["sccr"].dtype == np.float32


@pytest.mark.parametrize("axis", ["obs", "var"])
def test_duplicate_names_warn_on_the_command_line(adata, axis, tmp_path, capsys):
    names = list(getattr(adata, f"{axis}_names"))
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's own warnings about non-unique names
        setattr(adata, f"{axis}_names", names)
        adata.write_h5ad(tmp_path / "in.h5ad")
    code, err = run_cli(capsys, "impute", tmp_path / "in.h5ad", tmp_path / "out.h5ad", *CLI)
    warned = [line for line in err.splitlines() if line.startswith("sccr: warning:")]
    assert code == 0 and any(f"1 duplicate {axis}_names" in line for line in warned), err


def test_view_copy_false_is_refused_with_the_fix(adata):
    """What would be written into a view never reaches its parent: refuse, and say how to get a result."""
    view = adata[:40]
    with pytest.raises(sccr.InputError, match=r"adata is a view .*sub = adata\[:, genes\].copy\(\).*copy=True"):
        sccr.impute(view, **API)
    assert view.is_view and "sccr" not in view.layers and "sccr" not in adata.layers


def test_view_copy_true_leaves_view(adata):
    view = adata[:40, :20]
    out = sccr.impute(view, copy=True, **API)
    assert view.is_view and "sccr" not in view.layers
    np.testing.assert_array_equal(out.layers["sccr"], sccr.SCCR(**API).fit_transform(adata.X[:40, :20]))


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_backed_anndata_refused_with_fix(adata, tmp_path, mode):
    adata.write_h5ad(tmp_path / "a.h5ad")
    before = digest(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed=mode)
    try:
        for layer in (None, "log"):
            with pytest.raises(sccr.InputError, match=r"backed by the file .*a\.h5ad.*adata = adata.to_memory\(\)"):
                sccr.impute(backed, layer=layer, **API)
        with pytest.raises(sccr.InputError, match="to_memory"):
            sccr.pp.preprocess_paper(backed)
    finally:
        backed.file.close()
    assert digest(tmp_path / "a.h5ad") == before


# --- files and paths (command line) ------------------------------------------------------


def truncated(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def not_anndata(path) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)


FILE_CASES = {
    "missing-file": (lambda p: p.unlink(), "does not exist"),
    "folder": (lambda p: (p.unlink(), p.mkdir()), "is a folder"),
    "text-not-hdf5": (lambda p: p.write_text("cell,gene\n1,2\n"), "not an HDF5"),
    "empty-file": (lambda p: p.write_bytes(b""), "not an HDF5"),
    "truncated-h5ad": (truncated, "is truncated: it holds"),
    "hdf5-not-anndata": (not_anndata, "cannot read"),
}


@pytest.mark.parametrize("damage", FILE_CASES, ids=list(FILE_CASES))
def test_unreadable_input(damage, tmp_path, capsys):
    src, _ = write_input(tmp_path, expression())
    spoil, phrase = FILE_CASES[damage]
    spoil(src)
    before = {p.name: (digest(p) if p.is_file() else None) for p in tmp_path.iterdir()}
    code, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert_refused(code, err, phrase)
    assert {p.name: (digest(p) if p.is_file() else None) for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    "where,phrase",
    [
        ("missing/out.h5ad", "does not exist; create it first"),
        ("in.h5ad", "is the input file"),
        ("sub/../in.h5ad", "is the input file"),
        ("sub", "is a folder"),
    ],
)
def test_bad_output_path(where, phrase, tmp_path, capsys):
    src, before = write_input(tmp_path, expression())
    (tmp_path / "sub").mkdir()
    for extra in ([], ["--force"]):
        code, err = run_cli(capsys, "impute", src, tmp_path / where, *CLI, *extra)
        assert_refused(code, err, phrase)
    assert digest(src) == before
    assert {p.name for p in tmp_path.iterdir()} == {"in.h5ad", "sub"} and not any((tmp_path / "sub").iterdir())


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to any folder")
def test_unwritable_output_folder(tmp_path, capsys):
    src, before = write_input(tmp_path, expression())
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run_cli(capsys, "impute", src, locked / "out.h5ad", *CLI)
    assert_refused(code, err, "is not writable")
    assert digest(src) == before


def test_unwritable_output_folder_reported_before_work(tmp_path, capsys, monkeypatch):
    src, before = write_input(tmp_path, expression())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    monkeypatch.setattr("sccr._anndata.impute", lambda *a, **k: pytest.fail("imputed before checking OUTPUT"))
    code, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert_refused(code, err, "is not writable")


def test_existing_output_needs_force(tmp_path, capsys):
    src, before = write_input(tmp_path, expression())
    dst = tmp_path / "out.h5ad"
    dst.write_bytes(b"precious")
    code, err = run_cli(capsys, "impute", src, dst, *CLI)
    assert_refused(code, err, "pass --force to replace it")
    assert dst.read_bytes() == b"precious"
    assert run_cli(capsys, "impute", src, dst, *CLI, "--force")[0] == 0
    assert ad.read_h5ad(dst).layers["sccr"].dtype == np.float32 and digest(src) == before


# --- interruption, internal faults, subprocess ---------------------------------------------


def leftovers(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} - {"in.h5ad"}


@pytest.mark.parametrize("where", ["sccr._engine.pipeline.signed_gene_neighbours", "sccr._io.os.replace"])
def test_ctrl_c_exits_130_and_leaves_nothing(where, tmp_path, capsys, monkeypatch):
    src, before = write_input(tmp_path, expression())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    code, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 130 and err.strip() == "sccr: error: interrupted"
    assert leftovers(tmp_path) == set() and digest(src) == before


def test_ctrl_c_in_a_threaded_stage_drops_the_queued_chunks(monkeypatch):
    """Ctrl-C reaches the main thread while it waits for chunks; the queued ones must not run."""
    import contextlib
    import time

    from sccr._engine import propagation as _propagation
    from sccr._engine.execution import Execution, executing

    class InterruptedBar:
        def update(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(Execution, "bar", lambda *a, **k: contextlib.nullcontext(InterruptedBar()))
    loaded = []

    def load(i):
        loaded.append(i)
        time.sleep(0.01)  # lets the main thread run while a chunk is in flight
        return np.ones((50, 4), np.float32), None

    with pytest.raises(KeyboardInterrupt):
        with executing(Execution(n_jobs=2)):
            _propagation.propagate_chunks(
                sp.identity(50, format="csr", dtype=np.float32), 100, load, lambda i, block: None, n_iter=1, hard=True
            )
    assert len(loaded) <= 5  # the chunk that finished and those in flight, not all 100


DRIVER = """
import signal, sys
import sccr._anndata, sccr.cli

def stalled_write(*args, **kwargs):
    print("writing", flush=True)
    signal.pause()  # until the test sends its signal

sccr._anndata.write_element = stalled_write  # called once the output file holds the imputed layer
sys.argv = ["sccr", *sys.argv[1:]]
sccr.cli.entry()
"""


@pytest.mark.parametrize(
    "signum,code,word",
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "terminated"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
@pytest.mark.slow
def test_signal_during_write_leaves_nothing(signum, code, word, tmp_path):
    """A real Ctrl-C, or a scheduler's SIGTERM, while OUTPUT is half written."""
    src, before = write_input(tmp_path, expression())
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "impute", str(src), str(tmp_path / "out.h5ad"), *CLI],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert leftovers(tmp_path) != set()  # the temporary file exists now
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code and err.strip() == f"sccr: error: {word}", err
    assert leftovers(tmp_path) == set() and digest(src) == before


def test_internal_fault_exits_1_with_report_hint(tmp_path, capsys, monkeypatch):
    src, before = write_input(tmp_path, expression())

    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr("sccr._engine.pipeline.knn_graph", broken)
    code, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sccr: error: internal fault (RuntimeError: kernel exploded)")
    assert "rerun with --debug and report it" in lines[0]
    assert leftovers(tmp_path) == set() and digest(src) == before


def test_multiline_error_messages_become_one_line(tmp_path, capsys, monkeypatch):
    src, _ = write_input(tmp_path, expression())

    def broken(*args, **kwargs):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr("sccr._engine.pipeline.knn_graph", broken)
    code, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "first line second line" in err


@pytest.mark.parametrize("damage,phrase", [("nan", "NaN or infinite"), ("truncated", "is truncated")])
def test_subprocess_error_has_no_traceback(damage, phrase, tmp_path):
    src, before = write_input(tmp_path, with_entry(np.nan) if damage == "nan" else expression())
    if damage == "truncated":
        truncated(src)
        before = digest(src)
    proc = subprocess.run(
        [sys.executable, "-m", "sccr.cli", "impute", str(src), str(tmp_path / "out.h5ad"), *CLI],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sccr: error:")]
    assert len(errors) == 1 and phrase in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert digest(src) == before and leftovers(tmp_path) == set()


# --- docs/errors.md lists every message ------------------------------------------------------


def message_heads(source: str) -> list[str]:
    """For every ``raise InputError(...)`` and ``warnings.warn(...)``: the start of its fixed text.

    That is the first 25 characters of the longest literal part of the message
    before its first ';' (the problem, without the fix or the values).
    """
    import ast

    heads = []
    for call in ast.walk(ast.parse(source)):
        if (
            not isinstance(call, ast.Call)
            or not call.args
            or ast.unparse(call.func) not in ("InputError", "warnings.warn")
        ):
            continue
        parts = call.args[0].values if isinstance(call.args[0], ast.JoinedStr) else [call.args[0]]
        chunks, done = [""], False
        for part in parts:
            if done:
                break
            if isinstance(part, ast.Constant):
                text, _, rest = part.value.partition(";")
                chunks[-1] += text
                done = bool(rest) or text != part.value
            else:
                chunks.append("")
        heads.append(max(chunks, key=len).strip()[:25])
    return heads


def test_docs_list_every_message():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "errors.md").read_text()
    heads = [head for path in sorted((root / "src" / "sccr").rglob("*.py")) for head in message_heads(path.read_text())]
    assert len(heads) >= 35
    missing = [head for head in heads if head not in docs]
    assert missing == [], missing
