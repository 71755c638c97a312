"""Faults: killed runs, full disks, concurrent writers, damaged inputs, stale leftovers.

Every case asserts what docs/errors.md ("Faults") promises: no corrupt OUTPUT ever
exists (an OUTPUT is either absent, the one that was there before, or bitwise the
output of an uninterrupted run), INPUT is byte-identical, and after the next run
nothing stale remains (no temporary output, lock, scratch folder or checkpoint).
Subprocess cases (real SIGKILL / SIGTERM, a real full tmpfs) are marked slow.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

import sccr
from helpers import make_expression
from sccr._engine import files
from sccr.cli import main

OPTIONS = dict(k=5, n_iter=3, n_jobs=1)
CLI = ["--k", "5", "--n-iter", "3", "--n-jobs", "1", "--quiet"]
SRC = Path(sccr.__file__).resolve().parents[1]


# --- helpers ----------------------------------------------------------------------------------


def digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_input(folder: Path, n_cells: int = 120, n_genes: int = 40, name: str = "in.h5ad") -> Path:
    X = make_expression(n_cells, n_genes, seed=3)
    adata = ad.AnnData(sp.csr_matrix(X))
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.var_names = [f"g{j}" for j in range(n_genes)]
    path = folder / name
    adata.write_zarr(path) if path.suffix == ".zarr" else adata.write_h5ad(path)
    return path


def out_of_core_budget(shape, **kw) -> int:
    from sccr._engine.memory import estimate_peak_bytes

    return estimate_peak_bytes(
        *shape, None, method="sccr", k=5, k_gene=2, n_jobs=1, out_of_core=True, output_in_memory=False, **kw
    )


def arrays(path: Path) -> dict:
    a = ad.read_zarr(path) if path.suffix == ".zarr" else ad.read_h5ad(path)
    return {
        "layer": a.layers["sccr"],
        "connectivities": a.obsp["sccr_connectivities"],
        "distances": a.obsp["sccr_distances"],
        **{key: a.varp[key] for key in a.varp},
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if sp.issparse(x):
            assert x.shape == y.shape and (x != y).nnz == 0, key
            np.testing.assert_array_equal(x.toarray(), y.toarray())
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's output of :func:`write_input`'s data with OPTIONS."""
    folder = tmp_path_factory.mktemp("reference")
    src = write_input(folder)
    sccr.impute_file(src, folder / "out.h5ad", **OPTIONS)
    return arrays(folder / "out.h5ad")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(*folders: Path, keep=("in.h5ad", "in.zarr", "out.h5ad", "out.zarr")) -> list[str]:
    return sorted(p.name for folder in folders for p in folder.iterdir() if p.name not in keep)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_owner(path: Path, pid: int, host: str = files.HOST) -> None:
    path.write_text(json.dumps({"pid": pid, "host": host, "since": time.time(), "program": "sccr"}))


# --- stale leftovers and sccr clean ---------------------------------------------------------


def stale_run(folder: Path, scratch: Path, pid: int, host: str = files.HOST) -> dict[str, Path]:
    """What a run killed with SIGKILL leaves: a temporary output with its lock, a scratch folder with its marker."""
    temp = folder / ".out.h5ad.abcd1234.tmp.h5ad"
    temp.write_bytes(b"\0" * 1000)
    write_owner(folder / ".out.h5ad.sccr-lock", pid, host)
    panels = scratch / "sccr-scratch-abcd1234"
    panels.mkdir()
    (panels / "D0.f32").write_bytes(b"\0" * 4000)
    write_owner(panels / files.OWNER_MARKER, pid, host)
    return {"temp": temp, "lock": folder / ".out.h5ad.sccr-lock", "scratch": panels}


def test_sweep_removes_what_a_gone_run_left_and_names_it(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    left = stale_run(tmp_path, scratch, dead_pid())
    found = files.sweep(tmp_path) + files.sweep(scratch)
    assert {item.outcome for item in found} == {"removed"}
    assert {item.path for item in found} == set(left.values())
    assert not any(p.exists() for p in left.values())
    assert "removed stale temporary output" in found[0].describe() and "which has ended" in found[0].describe()


def test_sweep_keeps_a_live_run(tmp_path):
    temp = tmp_path / ".out.h5ad.abcd1234.tmp.h5ad"
    temp.write_bytes(b"x")
    with files.claim(files.lock_path(tmp_path / "out.h5ad"), lambda owner: AssertionError(owner)):
        (found,) = files.sweep(tmp_path)
        assert found.outcome == "live" and found.owner.pid == os.getpid() and temp.exists()
        assert "is still running" in found.describe()
    panels, marker = files.owned_folder(tmp_path)
    try:
        (found,) = [item for item in files.sweep(tmp_path) if item.path == panels]
        assert found.outcome == "live" and panels.exists()
    finally:
        marker.release()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    """The lock file names a process that exists (this one) but that holds no lock on it: its owner is gone."""
    left = stale_run(tmp_path, tmp_path, os.getpid())
    assert {item.outcome for item in files.sweep(tmp_path)} == {"removed"}
    assert not any(p.exists() for p in left.values())


def test_another_hosts_files_are_kept_and_named(tmp_path, capsys):
    left = stale_run(tmp_path, tmp_path, 4242, host="elsewhere.example")
    code, out, _ = run_cli(capsys, "clean", tmp_path)
    assert code == 0 and all(p.exists() for p in left.values())
    assert "pid 4242 on host 'elsewhere.example'" in out and "cannot tell from here whether it still runs" in out
    src = write_input(tmp_path)
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 2 and "is locked by sccr run pid 4242 on host 'elsewhere.example'" in err
    assert "delete the lock file" in err and not (tmp_path / "out.h5ad").exists()


def test_unmarked_leftovers_are_never_removed(tmp_path, capsys):
    """What an older sccr (without owner markers) left may belong to one of its runs still going: named, kept."""
    temp = tmp_path / ".out.h5ad.abcd1234.tmp.h5ad"
    temp.write_bytes(b"x")
    panels = tmp_path / "sccr-scratch-old12345"
    panels.mkdir()
    long_ago = time.time() - 3600
    for p in (temp, panels):
        os.utime(p, (long_ago, long_ago))
    code, out, _ = run_cli(capsys, "clean", tmp_path)
    assert code == 0 and temp.exists() and panels.exists()
    assert out.count("has no owner marker") == 2


def test_sccr_clean_dry_run_then_clean(tmp_path, capsys):
    left = stale_run(tmp_path, tmp_path, dead_pid())
    code, out, _ = run_cli(capsys, "clean", "--dry-run", tmp_path)
    assert code == 0 and all(p.exists() for p in left.values()) and out.count("would remove stale") == 3
    code, out, _ = run_cli(capsys, "clean", tmp_path)
    assert code == 0 and not any(p.exists() for p in left.values())
    assert out.count("removed stale") == 3 and "3 leftover(s) found; freed" in out
    code, out, _ = run_cli(capsys, "clean", tmp_path)
    assert code == 0 and out.strip() == "nothing to clean"
    code, _, err = run_cli(capsys, "clean", tmp_path / "missing")
    assert code == 2 and "does not exist" in err


def test_sccr_clean_removes_a_killed_save_and_keeps_the_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "sccr-checkpoint.json").write_text("{}")
    (ck / "sccr-checkpoint-B.f32").write_bytes(b"kept")
    (ck / "sccr-checkpoint-A3.npz.part").write_bytes(b"half")
    write_owner(ck / ".sccr-lock", dead_pid())
    code, out, _ = run_cli(capsys, "clean", ck)
    assert code == 0 and "removed stale checkpoint part" in out
    assert sorted(p.name for p in ck.iterdir()) == [".sccr-lock", "sccr-checkpoint-B.f32", "sccr-checkpoint.json"]


def test_an_interrupted_zarr_replacement_is_put_back(tmp_path):
    """Killed between moving the old store aside and renaming the new one into place: the old OUTPUT comes back."""
    aside = tmp_path / ".out.zarr.abcd1234.old"
    (aside / "out.zarr").mkdir(parents=True)
    (aside / "out.zarr" / "zarr.json").write_text("{}")
    write_owner(tmp_path / ".out.zarr.sccr-lock", dead_pid())
    (restored, lock) = files.sweep(tmp_path)
    assert restored.outcome == "restored" and (tmp_path / "out.zarr" / "zarr.json").exists()
    assert lock.outcome == "removed" and sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_impute_removes_and_names_what_killed_runs_left(tmp_path, capsys, reference):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    src = write_input(tmp_path)
    before = digest(src)
    left = stale_run(tmp_path, scratch, dead_pid())
    code, _, err = _verbose(capsys, "impute", src, tmp_path / "out.h5ad", "--scratch-dir", scratch)
    assert code == 0, err
    assert err.count("removed stale") == 3
    assert (
        not any(p.exists() for p in left.values())
        and leftovers(tmp_path, scratch) == ["scratch"]
        and not any(scratch.iterdir())
    )
    assert_same(arrays(tmp_path / "out.h5ad"), reference)
    assert digest(src) == before


def _verbose(capsys, *args):
    """``sccr ARGS`` with CLI's options but its notes shown (no --quiet)."""
    code = main([str(a) for a in args] + [a for a in CLI if a != "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- concurrent writers ------------------------------------------------------------------------


def test_a_second_writer_of_one_output_is_refused_at_start(tmp_path, capsys, monkeypatch):
    src = write_input(tmp_path)
    out = tmp_path / "out.h5ad"
    from sccr._io import output_lock

    monkeypatch.setattr("sccr._anndata.prepare", lambda *a, **k: pytest.fail("the refused run read its input"))
    with output_lock(out):
        code, _, err = run_cli(capsys, "impute", src, out, *CLI)
        code_forced, _, _ = run_cli(capsys, "impute", src, out, *CLI, "--force")
    assert code == code_forced == 2
    assert err.strip() == (
        f"sccr: error: output {str(out)!r} is being written by sccr run pid {os.getpid()} on this host; "
        "wait for it to finish or choose another output path"
    )
    assert leftovers(tmp_path) == []


def test_a_second_run_on_one_checkpoint_is_refused(tmp_path, capsys):
    from sccr._engine.checkpoint import Checkpoint

    src = write_input(tmp_path)
    held = Checkpoint.lock(tmp_path / "ck")
    try:
        code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI, "--checkpoint", tmp_path / "ck")
    finally:
        held.close()
    assert code == 2 and "checkpoint folder" in err and f"is in use by sccr run pid {os.getpid()} on this host" in err
    # the refused run left the folder alone; the holder, which made it and never used it, removed it
    assert leftovers(tmp_path) == []


PAUSING_DRIVER = """
import sys
from contextlib import contextmanager
import sccr.cli
from sccr._engine import pipeline

real, pause_at, hold_after = pipeline._Timer.stage, sys.argv.pop(1), sys.argv.pop(1)
seen = {}

@contextmanager
def announced(self, name):
    print("stage", name, flush=True)
    seen[name] = seen.get(name, 0) + 1
    if name == pause_at:
        sys.stdin.readline()  # until the test says go on
    with real(self, name):
        yield
    if f"{name}:{seen[name]}" == hold_after:
        sys.stdin.readline()  # the run goes no further than the end of this stage until the test says so

pipeline._Timer.stage = announced
sys.argv = ["sccr", *sys.argv[1:]]
sccr.cli.entry()
"""


def start_driver(args, *, pause_at: str = "-", hold_after: str = "-", env=None) -> subprocess.Popen:
    """The ``sccr`` command in a child that prints ``stage NAME`` as each stage starts.

    ``pause_at``: it waits for a line on stdin before running that stage; ``hold_after``
    (``"NAME:OCCURRENCE"``): it waits for one after that occurrence of the stage has ended.
    """
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-c", PAUSING_DRIVER, pause_at, hold_after, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def wait_for(proc: subprocess.Popen, line: str, occurrence: int = 1) -> None:
    seen = 0
    while True:
        got = proc.stdout.readline()
        assert got, f"the run ended before {line!r}: {proc.stderr.read()}"
        if got.strip() == line:
            seen += 1
            if seen == occurrence:
                return


@pytest.mark.slow
def test_concurrent_writers_one_wins_the_other_refuses(tmp_path, capsys, reference):
    src = write_input(tmp_path)
    before = digest(src)
    out = tmp_path / "out.h5ad"
    first = start_driver(["impute", src, out, *CLI], pause_at="soft_fp")
    try:
        wait_for(first, "stage soft_fp")  # the first run holds the lock and is writing its temporary output
        code, _, err = run_cli(capsys, "impute", src, out, *CLI, "--force")
        assert code == 2 and f"is being written by sccr run pid {first.pid} on this host" in err
        first.stdin.write("go\n")
        first.stdin.flush()
        _, first_err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, first_err
    assert_same(arrays(out), reference)
    assert digest(src) == before and leftovers(tmp_path) == []


# --- killed runs -------------------------------------------------------------------------------


#: (signal, stage during which it is sent, which occurrence, out of core) - a few points of each kind;
#: it is sent a random delay of up to 50 ms (seeded: reproducible) after the stage starts, and the
#: run is held at the stage's end so that a fast machine cannot finish the run first.
KILLS = [
    (signal.SIGKILL, "hard_fp_1", 1, False),
    (signal.SIGKILL, "checkpoint", 3, False),  # while the third stage is being saved
    (signal.SIGKILL, "soft_fp", 1, False),
    (signal.SIGKILL, "knn_cells_2", 1, True),
    (signal.SIGKILL, "soft_fp", 1, True),
    (signal.SIGTERM, "gene_fp", 1, True),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum,stage,occurrence,out_of_core",
    KILLS,
    ids=[f"{s.name}-{st}{o}-{'ooc' if c else 'mem'}" for s, st, o, c in KILLS],
)
def test_killed_run_resumes_to_the_same_output(signum, stage, occurrence, out_of_core, tmp_path, capsys, reference):
    rng = random.Random(f"{signum}{stage}{occurrence}{out_of_core}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    src = write_input(tmp_path)
    before = digest(src)
    out, ck = tmp_path / "out.h5ad", tmp_path / "ck"
    extra = ["--scratch-dir", scratch, "--checkpoint", ck]
    if out_of_core:
        extra += ["--memory-budget", str(out_of_core_budget((120, 40)))]
    # Held at the end of the stage: the signal lands within it (or just after it), never after the run.
    proc = start_driver(["impute", src, out, *CLI, *extra], hold_after=f"{stage}:{occurrence}")
    try:
        wait_for(proc, f"stage {stage}", occurrence)
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if signum == signal.SIGTERM:
        assert proc.returncode == 143 and err.strip().endswith("sccr: error: terminated"), err
        assert leftovers(tmp_path) == ["ck", "scratch"] and not any(
            scratch.iterdir()
        )  # cleaned up, the checkpoint kept
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # never a partial OUTPUT: killed before the rename, there is none
    assert digest(src) == before
    code, _, err = _verbose(capsys, "impute", src, out, *extra)
    assert code == 0, err
    assert "resuming from the checkpoint" in err  # at least the first stage was kept before each of these points
    assert_same(arrays(out), reference)
    assert digest(src) == before
    assert leftovers(tmp_path) == ["scratch"] and not any(scratch.iterdir())  # no temp, lock, scratch or checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_a_kill_at_a_random_moment(seed, tmp_path, capsys, reference):
    """SIGKILL or SIGTERM at a random moment after the run's start (seeded delay; the moment it lands varies with load)."""
    rng = random.Random(seed)
    signum, out_of_core = (signal.SIGKILL, signal.SIGTERM)[seed % 2], seed >= 2
    src = write_input(tmp_path)
    before = digest(src)
    out, ck = tmp_path / "out.h5ad", tmp_path / "ck"
    extra = ["--scratch-dir", tmp_path, "--checkpoint", ck]
    if out_of_core:
        extra += ["--memory-budget", str(out_of_core_budget((120, 40)))]
    proc = start_driver(["impute", src, out, *CLI, *extra])
    try:
        wait_for(proc, "stage knn_cells_1")
        time.sleep(rng.uniform(0, 1.0))
        proc.send_signal(signum)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode in (0, -signal.SIGKILL, 143, -signal.SIGTERM)
    if proc.returncode == -signal.SIGTERM:
        # Only after sccr's main returned: Python drops its signal handlers while the interpreter exits.
        assert out.exists()
    if out.exists():  # the run had renamed its output into place (maybe finished) when the signal came: it is whole
        assert_same(arrays(out), reference)
    else:
        assert proc.returncode != 0
    assert digest(src) == before
    code, _, err = run_cli(capsys, "impute", src, out, *CLI, *extra, "--force")
    assert code == 0, err
    assert_same(arrays(out), reference)
    assert leftovers(tmp_path) == [] and digest(src) == before


@pytest.mark.slow
def test_sigkill_without_checkpoint_leaves_only_what_the_next_run_removes(tmp_path, capsys, reference):
    """The issue's case: a run killed with SIGKILL leaves a hidden temporary output; the next run removes it and says so."""
    src = write_input(tmp_path)
    out = tmp_path / "out.h5ad"
    proc = start_driver(["impute", src, out, *CLI, "--scratch-dir", tmp_path])
    try:
        wait_for(proc, "stage soft_fp")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    left = leftovers(tmp_path)
    assert ".out.h5ad.sccr-lock" in left and any(name.endswith(".tmp.h5ad") for name in left) and not out.exists()
    code, _, err = _verbose(capsys, "impute", src, out, "--scratch-dir", tmp_path)
    assert code == 0 and "removed stale temporary output" in err and f"pid {proc.pid} on this host" in err
    assert leftovers(tmp_path) == []
    assert_same(arrays(out), reference)


# --- full disks ---------------------------------------------------------------------------------


Usage = collections.namedtuple("Usage", "total used free")


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def precious_output(folder: Path) -> tuple[Path, str]:
    out = folder / "out.h5ad"
    out.write_bytes(b"the previous output")
    return out, digest(out)


def test_a_disk_too_full_for_a_lock_file(tmp_path, capsys, monkeypatch):
    src = write_input(tmp_path)
    monkeypatch.setattr(files.os, "pwrite", no_space)
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 2 and f"no space left in {str(tmp_path)!r} while writing the lock file" in err
    assert leftovers(tmp_path) == []


def test_not_enough_space_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    src = write_input(tmp_path)
    out, kept = precious_output(tmp_path)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: Usage(10 << 20, 10 << 20, 1000))
    code, _, err = run_cli(capsys, "impute", src, out, *CLI, "--force")
    assert code == 2 and f"not enough free space in {str(tmp_path)!r} for the output" in err
    assert "but 1000 B is free" in err and len(err.strip().splitlines()) == 1
    assert digest(out) == kept and leftovers(tmp_path, keep=("in.h5ad", "out.h5ad")) == []


def test_scratch_files_and_output_on_one_file_system_add_up(tmp_path, capsys, monkeypatch):
    src = write_input(tmp_path)
    from sccr._io import output_bytes

    need_output = output_bytes(src, (120, 40), 5, 2)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: Usage(1 << 30, 0, need_output + 1000))
    code, _, err = run_cli(
        capsys,
        "impute",
        src,
        tmp_path / "out.h5ad",
        *CLI,
        "--scratch-dir",
        tmp_path,
        "--memory-budget",
        str(out_of_core_budget((120, 40))),
    )
    assert code == 2 and "for the output and the scratch files" in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "where,what",
    [
        ("sccr._engine.matrix._pwrite_from", "while writing scratch files"),
        ("sccr._anndata.reserve_space", "while writing the output"),
        ("sccr._io.shutil.copyfile", "while writing the output"),
    ],
    ids=["scratch", "output-layer", "output-copy"],
)
def test_a_full_disk_on_the_way_is_one_line_and_leaves_nothing(where, what, tmp_path, capsys, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    src = write_input(tmp_path)
    before = digest(src)
    out, kept = precious_output(tmp_path)
    monkeypatch.setattr(where, no_space)
    code, _, err = run_cli(
        capsys,
        "impute",
        src,
        out,
        *CLI,
        "--force",
        "--scratch-dir",
        scratch,
        "--memory-budget",
        str(out_of_core_budget((120, 40))),
    )
    folder = scratch if "scratch" in what else tmp_path
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (
        f"no space left in {str(folder)!r} {what}" in err
        and "the run needs about" in err
        and "partial files were removed" in err
    )
    assert digest(out) == kept and digest(src) == before
    assert leftovers(tmp_path) == ["scratch"] and not any(scratch.iterdir())


def test_a_full_disk_while_checkpointing_keeps_the_finished_stages(tmp_path, capsys, monkeypatch, reference):
    src = write_input(tmp_path)
    out, ck = tmp_path / "out.h5ad", tmp_path / "ck"
    from sccr._engine import checkpoint

    real = checkpoint._write_panels
    calls = []

    def full_on_second(M, path):
        calls.append(path.name)
        if len(calls) == 2:  # D0 was kept; C finds the disk full half way
            path.write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(M, path)

    monkeypatch.setattr(checkpoint, "_write_panels", full_on_second)
    code, _, err = run_cli(capsys, "impute", src, out, *CLI, "--checkpoint", ck)
    assert (
        code == 2 and f"no space left in {str(ck)!r} while writing the checkpoint (its finished stages are kept)" in err
    )
    kept = sorted(p.name for p in ck.iterdir())
    assert not any(name.endswith(".part") for name in kept) and "sccr-checkpoint-D0.f32" in kept
    assert leftovers(tmp_path) == ["ck"]
    monkeypatch.setattr(checkpoint, "_write_panels", real)  # space was freed
    code, _, err = _verbose(capsys, "impute", src, out, "--checkpoint", ck)
    assert code == 0 and "3 of 8 stages done (last: gene_graph)" in err
    assert_same(arrays(out), reference)
    assert leftovers(tmp_path) == []


TMPFS_SCRIPT = """
set -e
mount -t tmpfs -o size={size} tmpfs {mnt}
cp {src} {mnt}/in.h5ad
printf 'the previous output' > {mnt}/out.h5ad
sha256sum {mnt}/in.h5ad {mnt}/out.h5ad > {work}/before.txt
set +e
{python} -c "{driver}" impute {mnt}/in.h5ad {mnt}/out.h5ad {cli} --force 2> {work}/err.txt
echo $? > {work}/code.txt
sha256sum {mnt}/in.h5ad {mnt}/out.h5ad > {work}/after.txt
ls -A {mnt} > {work}/left.txt
"""

#: The sccr command, without (``unchecked``) or with its free-space check.
TMPFS_DRIVER = {
    "checked": "import sys, sccr.cli; sys.argv = ['sccr', *sys.argv[1:]]; sccr.cli.entry()",
    "unchecked": "import sys, sccr.cli, sccr._engine.entry as e; e.check_free_space = lambda needs: None; "
    "sys.argv = ['sccr', *sys.argv[1:]]; sccr.cli.entry()",
}


def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not unshare_available(), reason="needs user namespaces (unshare -rm) to mount a small tmpfs")
@pytest.mark.parametrize("check", ["checked", "unchecked"])
def test_a_real_full_tmpfs(check, tmp_path):
    """A 6 MiB tmpfs holding INPUT and OUTPUT: refused up front, or (check off) ENOSPC met on the way; OUTPUT intact either way."""
    src = write_input(tmp_path, n_cells=3000, n_genes=200)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = TMPFS_SCRIPT.format(
        size="6m", mnt=mnt, src=src, work=tmp_path, python=sys.executable, driver=TMPFS_DRIVER[check], cli=" ".join(CLI)
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = (tmp_path / "err.txt").read_text()
    assert (tmp_path / "code.txt").read_text().strip() == "2", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    phrase = "not enough free space in" if check == "checked" else "no space left in"
    assert phrase in lines[0] and str(mnt) in lines[0]
    assert (tmp_path / "before.txt").read_text() == (
        tmp_path / "after.txt"
    ).read_text()  # INPUT and the old OUTPUT intact
    assert (tmp_path / "left.txt").read_text().split() == ["in.h5ad", "out.h5ad"]


# --- damaged inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_h5ad_is_named_and_nothing_is_written(fraction, tmp_path, capsys):
    src = write_input(tmp_path)
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * fraction)])
    before = digest(src)
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"input {str(src)!r} is truncated: it holds {int(len(data) * fraction)} of its {len(data)} bytes" in err
    assert digest(src) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("part", ["X/data", "X/indices", "X/indptr", "obs/_index"])
def test_zarr_store_missing_a_chunk_is_named(part, tmp_path, capsys):
    src = write_input(tmp_path, name="in.zarr")
    array = zarr.open_group(src, mode="r")[part]
    chunk_files = [p for p in (src / part).iterdir() if not p.name.startswith(".") and p.name != "zarr.json"]
    assert array.nchunks >= 1 and chunk_files
    for chunk in chunk_files[:1]:
        shutil.rmtree(chunk) if chunk.is_dir() else chunk.unlink()
    before = digest(src)
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"zarr store {str(src)!r} is missing 1 of the {array.nchunks} chunks of {part!r}" in err
    assert digest(src) == before and leftovers(tmp_path) == []
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI, "--preprocess", "paper")
    assert code == 2 and "is missing 1 of the" in err  # also when the whole store is read


def test_a_corrupt_chunk_names_the_element(tmp_path, capsys):
    src = write_input(tmp_path, name="in.zarr")
    (chunk,) = [p for p in (src / "X" / "data").iterdir() if not p.name.startswith(".")]
    chunk.write_bytes(chunk.read_bytes()[:10])  # a chunk cut short: it no longer decompresses
    before = digest(src)
    code, _, err = run_cli(capsys, "impute", src, tmp_path / "out.h5ad", *CLI)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"cannot read 'X' of {str(src)!r}" in err and "copy it again" in err
    assert digest(src) == before and leftovers(tmp_path) == []


SWALLOWED_SIGTERM = """
import os, signal, sys, time, weakref
from sccr import cli

signal.signal(signal.SIGTERM, cli._raise_terminated)
if sys.argv[1] == "hook":
    sys.unraisablehook = cli._redeliver_interrupts(sys.unraisablehook)


def callback(ref):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100_000):  # the handler runs in here, inside a weakref callback: its exception is dropped
        pass


class Obj:
    pass


obj = Obj()
ref = weakref.ref(obj, callback)
del obj
try:
    time.sleep(2)
except cli._Terminated:
    sys.exit(143)
sys.exit(0)
"""


@pytest.mark.parametrize("hook", ["hook", "none"])
def test_a_sigterm_dropped_inside_a_weakref_callback_is_sent_again(hook):
    """Python drops a signal's exception raised in a weakref callback; the CLI's hook sends the signal again."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SWALLOWED_SIGTERM, hook], capture_output=True, text=True, env=env)
    if hook == "hook":
        assert proc.returncode == 143 and "Exception ignored" not in proc.stderr, proc.stderr
    else:  # the control: without the hook the run goes on as if never stopped
        assert proc.returncode == 0 and "Exception ignored" in proc.stderr, proc.stderr
