"""A measured resume: ``sccr impute --checkpoint`` killed (SIGKILL) during its last stage, then run again.

Usage: python benchmarks/resume.py [--cells 100000] [--source ../shared/data/pbmc4k_top2000.h5ad]
       [--work /tmp/sccr-resume] [--n-jobs 2] [--fraction 0.5] [--out benchmarks/results/resume.json]

The input is built as in ``benchmarks/scaling.py`` (``resample.py``: real cells drawn
with replacement, counts binomially thinned to 80%, 2000 genes) and the command is
``sccr impute IN OUT --preprocess paper``, each run in a child process:

1. uninterrupted, without a checkpoint: what a rerun from zero costs;
2. with ``--checkpoint DIR``, killed with SIGKILL once ``fraction`` of its last stage
   (``soft_fp``, timed in run 1) has passed; the child announces each stage as it
   starts, which also times the checkpoint's saves;
3. the same command again: it resumes after the last finished stage.

Recorded: the wall time of each run, the time saved by resuming (run 1 minus run 3),
the checkpoint's saves in run 2 (seconds, and its size on disk when killed), and
whether run 3's output equals run 1's bit for bit (the imputed layer, the graphs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

#: The command line with each stage's start printed on stdout (the checkpoint's saves are the stage "checkpoint").
DRIVER = """
import sys
from contextlib import contextmanager
import sccr.cli
from sccr._engine import pipeline

real = pipeline._Timer.stage

@contextmanager
def announced(self, name):
    print("stage", name, flush=True)
    with real(self, name):
        yield

pipeline._Timer.stage = announced
sys.argv = ["sccr", *sys.argv[1:]]
sccr.cli.entry()
"""


def run(argv: list[str], *, kill_at: str | None = None, delay: float = 0.0) -> dict:
    """Run ``argv`` (the driver's arguments); SIGKILL it ``delay`` s after stage ``kill_at`` starts. Wall time, peak RSS, stage starts."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stages: list[tuple[str, float]] = []
    killed = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("stage "):
                name = line.split()[1]
                stages.append((name, time.perf_counter() - start))
                if name == kill_at and not killed.is_set():
                    killed.set()
                    threading.Timer(delay, proc.send_signal, (signal.SIGKILL,)).start()

    reader = threading.Thread(target=read)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    reader.join()
    err = proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and not (kill_at and code == -signal.SIGKILL):
        raise RuntimeError(f"{' '.join(argv)} failed ({code}): {err}")
    return {"seconds": seconds, "exit": code, "peak_rss_mib": usage.ru_maxrss / 1024, "stages": stages, "stderr": err}


def checkpoint_seconds(stages: list[tuple[str, float]], end: float) -> float:
    """Seconds spent in the "checkpoint" pseudo-stages (each ends when the next stage starts)."""
    total = 0.0
    for (name, at), (_, following) in zip(stages, [*stages[1:], ("end", end)], strict=True):
        if name == "checkpoint":
            total += following - at
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def same_outputs(a: Path, b: Path, key: str = "sccr") -> bool:
    """Whether two outputs hold bitwise the same imputed layer (compared in row blocks) and graphs."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        la, lb = fa["layers"][key], fb["layers"][key]
        if la.shape != lb.shape:
            return False
        for row in range(0, la.shape[0], 16384):
            if not np.array_equal(la[row : row + 16384], lb[row : row + 16384]):
                return False
        for where in ("obsp", "varp"):
            for name in fa[where]:
                x, y = read_elem(fa[where][name]), read_elem(fb[where][name])
                if x.shape != y.shape or (x != y).nnz:
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100000)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "pbmc4k_top2000.h5ad")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sccr-resume"))
    parser.add_argument("--n-jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--fraction", type=float, default=0.5, help="of the last stage's time before the kill")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "resume.json")
    args = parser.parse_args()

    import anndata as ad
    import h5py
    from anndata.io import read_elem

    from resample import resample

    args.work.mkdir(parents=True, exist_ok=True)
    n = args.cells
    data = args.work / f"cells_{n}.h5ad"
    if not data.exists():
        resample(ad.read_h5ad(args.source), n, keep=0.8, seed=0).write_h5ad(data)
    full, resumed, ck = args.work / "uninterrupted.h5ad", args.work / "resumed.h5ad", args.work / "checkpoint"
    common = ["--preprocess", "paper", "--n-jobs", str(args.n_jobs), "--force"]

    first = run(["impute", str(data), str(full), *common])
    with h5py.File(full, "r") as f:
        timings = read_elem(f["uns"]["sccr"]["timings"])
        genes = int(f["layers"]["sccr"].shape[1])
    delay = args.fraction * float(timings["soft_fp"])
    print(f"uninterrupted: {first['seconds']:.1f} s (soft_fp {timings['soft_fp']:.1f} s)", flush=True)

    command = ["impute", str(data), str(resumed), *common, "--checkpoint", str(ck)]
    killed = run(command, kill_at="soft_fp", delay=delay)
    soft_fp_start = dict(killed["stages"])["soft_fp"]
    kept = folder_bytes(ck)
    print(
        f"checkpointed run: SIGKILL at {killed['seconds']:.1f} s, {killed['seconds'] - soft_fp_start:.1f} s into soft_fp; "
        f"checkpoint {kept / 2**30:.2f} GiB",
        flush=True,
    )
    again = run(command)
    equal = same_outputs(full, resumed)
    with h5py.File(resumed, "r") as f:
        resumed_timings = {k: float(v) for k, v in read_elem(f["uns"]["sccr"]["timings"]).items()}
    saved = first["seconds"] - again["seconds"]
    print(
        f"resumed: {again['seconds']:.1f} s; saved {saved:.1f} s against a rerun from zero; bitwise equal: {equal}",
        flush=True,
    )

    record = {
        "cells": n,
        "genes": genes,
        "n_jobs": args.n_jobs,
        "source": args.source.name,
        "command": "sccr " + " ".join(command[:1] + ["IN", "OUT"] + command[3:]).replace(str(ck), "DIR"),
        "uninterrupted_seconds": first["seconds"],
        "uninterrupted_peak_rss_mib": first["peak_rss_mib"],
        "uninterrupted_stage_seconds": {k: float(v) for k, v in timings.items()},
        "checkpointed_killed_at_seconds": killed["seconds"],
        "killed_into_last_stage_seconds": killed["seconds"] - soft_fp_start,
        "checkpoint_save_seconds_before_kill": checkpoint_seconds(killed["stages"], killed["seconds"]),
        "checkpoint_bytes_at_kill": kept,
        "checkpointed_peak_rss_mib": killed["peak_rss_mib"],
        "resumed_seconds": again["seconds"],
        "resumed_peak_rss_mib": again["peak_rss_mib"],
        # the kept stages' seconds (from the killed run), "fingerprint" (hashing the input), "resume" (reading the state back)
        "resumed_stage_seconds": resumed_timings,
        "resumed_notes": [line for line in again["stderr"].splitlines() if line.strip()],
        "saved_seconds": saved,
        "bitwise_equal": equal,
        "checkpoint_left_after_resume": ck.exists(),
        "measured": time.strftime("%Y-%m-%d"),
    }
    report = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    report["runs"] = [r for r in report["runs"] if r["cells"] != n] + [record]
    report["runs"].sort(key=lambda r: r["cells"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for path in (full, resumed):
        path.unlink()


if __name__ == "__main__":
    main()
