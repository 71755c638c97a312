"""Checkpoints: a run stopped after any stage resumes from the last kept one, with bitwise the same output.

Each stage's end is a kill point here (an exception right after the stage is
committed, as a kill there would leave it); the rerun must give exactly what an
uninterrupted run gives, in memory and out of core, for every method. A changed
input or option invalidates the checkpoint. The real kills (SIGKILL, SIGTERM) are
in ``test_faults.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_expression
from sccr._engine import STAGES
from sccr._engine import checkpoint as _checkpoint

OPTIONS = dict(k=5, n_iter=3, n_jobs=1)


class Killed(BaseException):
    """Stands for a kill right after a stage was committed."""


def write(folder: Path, X: np.ndarray, name: str = "in.h5ad") -> Path:
    path = folder / name
    ad.AnnData(sp.csr_matrix(X)).write_h5ad(path)
    return path


def outputs(path: Path) -> dict:
    a = ad.read_h5ad(path)
    return {
        "layer": a.layers["sccr"],
        **{f"obsp/{k}": v for k, v in a.obsp.items()},
        **{f"varp/{k}": v for k, v in a.varp.items()},
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if sp.issparse(x):
            assert (x != y).nnz == 0 and np.array_equal(x.data, y.data) and np.array_equal(x.indices, y.indices), key
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)


def kill_after(monkeypatch, stage: str) -> None:
    real = _checkpoint.Checkpoint._save

    def save(self, name, *args):
        real(self, name, *args)
        if name == stage:
            raise Killed

    monkeypatch.setattr(_checkpoint.Checkpoint, "_save", save)


def budget(shape, method: str) -> int:
    from sccr._engine.memory import estimate_peak_bytes

    return estimate_peak_bytes(
        *shape, None, method=method, k=5, k_gene=2, n_jobs=1, out_of_core=True, output_in_memory=False
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("in"), make_expression(150, 40, seed=5))


@pytest.fixture(scope="module")
def uninterrupted(source, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ref")
    return {m: outputs_of(source, folder / f"{m}.h5ad", method=m) for m in STAGES}


def outputs_of(source: Path, out: Path, **options) -> dict:
    sccr.impute_file(source, out, **OPTIONS, **options)
    return outputs(out)


CASES = [(m, stage.name, ooc) for m in STAGES for stage in STAGES[m][:-1] for ooc in (False, True)]


@pytest.mark.parametrize(
    "method,stage,out_of_core", CASES, ids=[f"{m}-{s}-{'ooc' if o else 'mem'}" for m, s, o in CASES]
)
def test_resume_after_each_stage_is_bitwise_the_uninterrupted_run(
    method, stage, out_of_core, source, uninterrupted, tmp_path, monkeypatch
):
    options = dict(method=method, scratch_dir=str(tmp_path))
    if out_of_core:
        options["memory_budget"] = budget((150, 40), method)
    ck, out = tmp_path / "ck", tmp_path / "out.h5ad"
    with monkeypatch.context() as m:
        kill_after(m, stage)
        with pytest.raises(Killed):
            sccr.impute_file(source, out, checkpoint=ck, **OPTIONS, **options)
    assert not out.exists() and json.loads((ck / "sccr-checkpoint.json").read_text())["stage"] == stage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary output, lock or scratch folder
    notes = []
    model = sccr.impute_file(source, out, checkpoint=ck, echo=notes.append, **OPTIONS, **options)
    assert model.out_of_core_ is out_of_core
    done = [s.name for s in STAGES[method]].index(stage) + 1
    assert f"{done} of {len(STAGES[method])} stages done (last: {stage})" in " ".join(notes)
    assert_same(outputs(out), uninterrupted[method])
    assert ad.read_h5ad(out).uns["sccr"]["params"]["resumed_after"] == stage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]  # the checkpoint is gone with its folder


def test_a_checkpoint_made_in_memory_resumes_out_of_core(source, uninterrupted, tmp_path, monkeypatch):
    ck, out = tmp_path / "ck", tmp_path / "out.h5ad"
    with monkeypatch.context() as m:
        kill_after(m, "gene_fp")
        with pytest.raises(Killed):
            sccr.impute_file(source, out, checkpoint=ck, **OPTIONS)
    model = sccr.impute_file(
        source, out, checkpoint=ck, memory_budget=budget((150, 40), "sccr"), scratch_dir=str(tmp_path), **OPTIONS
    )
    assert model.out_of_core_
    assert_same(outputs(out), uninterrupted["sccr"])


@pytest.mark.parametrize("change", ["option", "input", "n_jobs"])
def test_a_changed_input_or_option_invalidates_the_checkpoint(change, source, uninterrupted, tmp_path, monkeypatch):
    ck, out = tmp_path / "ck", tmp_path / "out.h5ad"
    with monkeypatch.context() as m:
        kill_after(m, "hard_fp_2")
        with pytest.raises(Killed):
            sccr.impute_file(source, out, checkpoint=ck, **OPTIONS)
    options, rerun_source = dict(OPTIONS), source
    if change == "option":
        options["alpha"] = 0.1
    elif change == "input":
        X = make_expression(150, 40, seed=5)
        X[0, 0] += 1.0  # one value differs
        rerun_source = write(tmp_path, X, "changed.h5ad")
    else:
        options["n_jobs"] = 2  # changes no number: the checkpoint holds
    notes = []
    sccr.impute_file(rerun_source, out, checkpoint=ck, echo=notes.append, **options)
    if change == "n_jobs":
        assert "6 of 8 stages done" in " ".join(notes)
        assert_same(outputs(out), uninterrupted["sccr"])
    else:
        assert "was made for another input, other options or another version of sccr: discarded" in " ".join(notes)
        assert_same(
            outputs(out),
            outputs_of(
                rerun_source,
                tmp_path / "fresh.h5ad",
                **{k: v for k, v in options.items() if k not in OPTIONS or OPTIONS[k] != v},
            ),
        )
    assert not ck.exists()


def test_what_a_killed_save_half_wrote_is_removed(source, uninterrupted, tmp_path, monkeypatch):
    ck, out = tmp_path / "ck", tmp_path / "out.h5ad"
    with monkeypatch.context() as m:
        kill_after(m, "gene_graph")
        with pytest.raises(Killed):
            sccr.impute_file(source, out, checkpoint=ck, **OPTIONS)
    (ck / "sccr-checkpoint-C.f32.part").write_bytes(b"\0" * 64)  # a kill in the middle of the next save
    (ck / "sccr-checkpoint.json.part").write_text("{")
    (ck / "notes.txt").write_text("not sccr's")  # the user's files in the folder are never touched
    notes = []
    sccr.impute_file(source, out, checkpoint=ck, echo=notes.append, **OPTIONS)
    assert "3 of 8 stages done" in " ".join(notes)
    assert_same(outputs(out), uninterrupted["sccr"])
    assert sorted(p.name for p in ck.iterdir()) == ["notes.txt"]


def test_a_damaged_checkpoint_is_discarded(source, uninterrupted, tmp_path, monkeypatch):
    ck, out = tmp_path / "ck", tmp_path / "out.h5ad"
    with monkeypatch.context() as m:
        kill_after(m, "hard_fp_1")
        with pytest.raises(Killed):
            sccr.impute_file(source, out, checkpoint=ck, **OPTIONS)
    d0 = ck / "sccr-checkpoint-D0.f32"
    d0.write_bytes(d0.read_bytes()[:-4])  # cut short
    notes = []
    sccr.impute_file(source, out, checkpoint=ck, echo=notes.append, **OPTIONS)
    assert "is missing files: discarded" in " ".join(notes)
    assert_same(outputs(out), uninterrupted["sccr"])


def test_the_fingerprint_reads_values_not_their_layout():
    from sccr._options import Options

    X = make_expression(50, 20, seed=1)
    options = Options(**OPTIONS)
    dense = _checkpoint.fingerprint(X, options)
    assert dense == _checkpoint.fingerprint(sp.csr_matrix(X), options)
    assert dense == _checkpoint.fingerprint(X, options.replace(n_jobs=2, memory_budget="1G", progress=True))
    assert dense != _checkpoint.fingerprint(X, options.replace(k=6))
    Y = X.copy()
    Y[3, 3] = np.nextafter(Y[3, 3], np.float32(10))  # one bit of one value
    assert dense != _checkpoint.fingerprint(Y, options)


def test_checkpoint_folder_errors(source, tmp_path, capsys):
    from sccr.cli import main

    (tmp_path / "file").write_text("x")
    for where, phrase in [("file", "is a file; pass a folder"), ("missing/ck", "parent")]:
        code = main(
            [
                "impute",
                str(source),
                str(tmp_path / "out.h5ad"),
                "--k",
                "5",
                "--quiet",
                "--checkpoint",
                str(tmp_path / where),
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and "checkpoint folder" in err and phrase in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_interrupts_during_a_commit_wait_for_its_end():
    """Ctrl-C in the middle of writing a checkpoint file is acted on once the file is whole."""
    import os
    import signal

    from sccr._engine.files import interrupts_deferred

    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            finished = True
    assert finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
