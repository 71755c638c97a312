"""Speed of full scCR on Worm Neuron beside MAGIC in the same run, each stage against this machine's floor.

Usage: python benchmarks/speed.py [--repeats 3] [--n-jobs 2] [--out benchmarks/results/speed.json]
       [--authors DIR --authors-python PYTHON]

- **Side by side**: sccr and MAGIC (magic-impute, its defaults, exact solver; the
  ``[benchmark]`` extra) alternate, each repeat in a fresh process that loads and
  preprocesses Worm Neuron (4186 cells x 2000 genes, float32) and imputes twice: the
  second call is the time reported (the first also imports magic-impute, or loads
  sccr's compiled kernels from numba's disk cache; it is reported too), with the
  process's peak RSS. A first sccr process pays numba's one-off compilation (cached
  on disk afterwards) and is reported apart. The ratio of the
  medians is the claim; absolute times differ up to 3x between machines.
- **The authors' code** (with ``--authors``): their ``scCR_Trainer.train`` (torch, CPU,
  ``--n-jobs`` threads), unmodified, imported from ``DIR`` and run by ``PYTHON`` (a separate
  environment with their dependencies; ``benchmarks/setup_authors.sh`` builds both) on the
  very matrix sccr imputes, alternating with sccr and MAGIC and timed the same way (its
  evaluation step, KMeans on the output, is left out). Its output is compared with sccr's.
- **Roofline**: this machine's float32 and float64 matrix products (GMAC/s), scipy's
  sparse x dense product and sccr's propagation kernel on the run's own cell graph,
  and memory bandwidth. Each stage's floor is its multiply-adds at the best rate the
  hardware gives for that kind of work: the neighbour searches and the gene graph are
  dense products (sgemm, dgemm); a propagation is a sparse x dense product, whose
  compute floor is sgemm's rate too (the same multiply-adds, with irregular reads).
- **Threads**: every stage with 1 thread against ``--n-jobs`` threads (strong scaling).

Prints a summary and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROPAGATION_STAGES = ("hard_fp_1", "gene_fp", "hard_fp_2", "soft_fp")
SEARCH_STAGES = ("knn_cells_1", "knn_cells_2", "knn_cells_3")
SETTINGS = dict(method="sccr", k=15, k_gene=2, n_iter=40, alpha=0.05, beta=0.99, gamma=0.01, sym_final=False)


def _preprocessed():
    import sccr

    return sccr.pp.preprocess_paper(sccr.datasets.worm_neuron())


def run_sccr(n_jobs: int, *, digest: bool = False) -> dict:
    """Load, preprocess and impute once in this process; report time, stages, work and peak RSS.

    ``digest``: also the SHA-256 of the imputed matrix (to check that two versions agree bit for bit).
    """
    from sccr._engine import run
    from sccr._options import Options
    from sccr._resources import peak_rss_mb

    adata = _preprocessed()
    rss_before = peak_rss_mb()
    options = Options(**SETTINGS, knn="auto", n_jobs=n_jobs, progress=False)
    seconds = []
    for _ in range(2):  # the first call also loads numba's compiled kernels from the disk cache
        start = time.perf_counter()
        result = run(adata.X, options)  # checks the input and plans memory, inside the timed span
        seconds.append(time.perf_counter() - start)
    report = {
        "seconds": seconds[1],
        "first_call_seconds": seconds[0],
        "timings": result.timings,
        "work": result.work,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_before_impute_mb": rss_before,
    }
    if digest:
        import hashlib

        imputed = result.imputed.to_array() if hasattr(result.imputed, "to_array") else result.imputed
        report["digest"] = hashlib.sha256(np.ascontiguousarray(imputed).tobytes()).hexdigest()
    return report


def run_magic(n_jobs: int) -> dict:
    """MAGIC on the same preprocessed matrix, timed the same way."""
    from sccr._benchmark.baselines import magic
    from sccr._resources import peak_rss_mb

    adata = _preprocessed()
    rss_before = peak_rss_mb()
    seconds = []
    for _ in range(2):  # the first call also imports magic-impute
        start = time.perf_counter()
        magic(adata.X, n_jobs=n_jobs, random_state=0)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": seconds[1],
        "first_call_seconds": seconds[0],
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_before_impute_mb": rss_before,
    }


AUTHORS_ARGS = dict(k=15, k_col=2, iter=40, alpha=0.05, beta=0.99, gamma=0.01, sym=False, device="cpu")


def run_authors(n_jobs: int, code: str, matrix: str, output: str | None) -> dict:
    """The authors' scCR on the saved matrix, in their environment (no sccr import here)."""
    import resource
    from argparse import Namespace
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, code)
    import misc.utils

    if not hasattr(misc.utils, "drop_data_mnar"):  # their embedder imports it; scFP's published misc lacks it
        misc.utils.drop_data_mnar = misc.utils.drop_data  # (only used to drop entries, never here)
    from scCR import scCR_Trainer  # the authors' trainer, as published

    torch.set_num_threads(n_jobs)
    trainer = object.__new__(scCR_Trainer)  # their __init__ reads and preprocesses dataset/<name>.h5ad itself
    trainer.args = Namespace(**AUTHORS_ARGS)
    trainer.device = "cpu"
    trainer.adata = SimpleNamespace(obsm={"train": np.load(matrix)})
    trainer.evaluate = lambda: None  # imputation only: their evaluation runs KMeans on the output
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        trainer.train()
        seconds.append(time.perf_counter() - start)
    if output:
        np.save(output, trainer.adata.obsm["denoised"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds[1], "first_call_seconds": seconds[0], "peak_rss_mb": peak, "torch": torch.__version__}


class _AuthorsControl:
    """The matrix handed to the authors' code, and the comparison of their output with sccr's."""

    def __init__(self, code: Path, python: Path):
        import atexit
        import shutil
        import tempfile

        for path, what in ((code / "scCR.py", "the authors' scCR.py"), (code / "misc", "scFP's misc/")):
            if not path.exists():
                sys.exit(f"--authors {code}: {what} is missing; build the folder with benchmarks/setup_authors.sh")
        self.code, self.python = code, python
        self.folder = Path(tempfile.mkdtemp(prefix="sccr-authors-"))
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)  # also when a run fails
        self.matrix, self.output = self.folder / "worm_neuron.npy", self.folder / "authors_output.npy"
        np.save(self.matrix, _preprocessed().X.toarray().astype(np.float32))

    def command(self, n_jobs: int, first: bool) -> list[str]:
        """The child process running the authors' code (the first one also saves its output)."""
        extra = ["--output", str(self.output)] if first else []
        return [
            str(self.python),
            __file__,
            "--child",
            "authors",
            "--n-jobs",
            str(n_jobs),
            "--authors",
            str(self.code),
            "--matrix",
            str(self.matrix),
            *extra,
        ]

    def compare(self, n_jobs: int) -> dict:
        """Largest and typical differences between the authors' output and sccr's on the same matrix."""
        from sccr._engine import run
        from sccr._options import Options

        theirs = np.load(self.output)
        ours = run(np.load(self.matrix), Options(**SETTINGS, n_jobs=n_jobs, progress=False)).imputed
        diff = np.abs(theirs.astype(np.float64) - ours)
        return {
            "max_abs_diff": float(diff.max()),
            "share_entries_diff_over_1e-3": float((diff > 1e-3).mean()),
            "median_abs_diff": float(np.median(diff)),
        }


def _best_seconds(f, repeats: int = 5) -> float:
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return float(min(times))


def roofline(n_jobs: int) -> dict:
    """Rates of this machine for the work each stage does, at the run's shapes."""
    from threadpoolctl import threadpool_limits

    from sccr._engine.execution import Execution, executing
    from sccr._engine.graph import _row_normalised, knn_graph
    from sccr._engine.propagation import propagate

    X = _preprocessed().X
    n, g = X.shape
    dense = _row_normalised(X.toarray())
    out: dict = {"shape": [n, g]}
    with executing(Execution(n_jobs=n_jobs)), threadpool_limits(limits=n_jobs):
        half = dense[: n // 2]
        out["sgemm_gmacs"] = half.shape[0] * n * g / _best_seconds(lambda: half @ dense.T) / 1e9
        chunk = dense[:1024].astype(np.float64)
        out["dgemm_gmacs"] = chunk.shape[0] * g * g / _best_seconds(lambda: chunk.T @ chunk) / 1e9
        A = knn_graph(X, 15, sym=True)
        out["graph_nnz"] = int(A.nnz)
        spmm = A.nnz * g / _best_seconds(lambda: A @ dense) / 1e9
        out["scipy_spmm_gmacs"] = spmm
        work = A.nnz * g * 40
        out["propagation_kernel_gmacs"] = work / _best_seconds(lambda: propagate(A, dense, 40, hard=True), 3) / 1e9
    big = np.ones(1 << 27, dtype=np.float32)  # 512 MiB, far beyond the caches
    target = np.empty_like(big)
    out["copy_gbs"] = 2 * big.nbytes / _best_seconds(lambda: np.copyto(target, big), 3) / 1e9
    return out


def floors(stages: dict, work: dict, shape: tuple[int, int], rates: dict) -> dict:
    """Each stage's floor (seconds at the hardware's best rate for its multiply-adds) and time / floor."""
    n, g = shape
    macs = {s: n * n * g for s in SEARCH_STAGES}
    macs["gene_graph"] = n * g * g
    rate = {s: rates["sgemm_gmacs"] for s in SEARCH_STAGES}
    rate["gene_graph"] = rates["dgemm_gmacs"]
    for s in PROPAGATION_STAGES:
        macs[s] = work[s]
        rate[s] = rates["sgemm_gmacs"]
    table = {}
    for s, m in macs.items():
        floor = m / rate[s] / 1e9
        table[s] = {
            "macs": int(m),
            "seconds": stages[s],
            "floor_seconds": floor,
            "times_floor": stages[s] / floor,
            "gmacs": m / stages[s] / 1e9,
        }
    return table


def _authors_report(authors: _AuthorsControl | None, runs: list[dict], sccr_total: float, n_jobs: int) -> dict:
    if authors is None:
        return {"authors_seconds_median": None}
    seconds = float(np.median([r["seconds"] for r in runs]))
    return {
        "authors_seconds_median": seconds,
        "authors_seconds_runs": [r["seconds"] for r in runs],
        "authors_first_call_seconds_median": float(np.median([r["first_call_seconds"] for r in runs])),
        "authors_peak_rss_mb_median": float(np.median([r["peak_rss_mb"] for r in runs])),
        "authors_torch": runs[0]["torch"],
        "authors_settings": AUTHORS_ARGS,
        "authors_over_sccr": seconds / sccr_total,
        "authors_output_vs_sccr": authors.compare(n_jobs),
    }


def _cpu_name() -> str:
    """The processor's model name (Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    parser.add_argument("--authors", type=Path, help="folder with the authors' scCR code and scFP's misc/")
    parser.add_argument("--authors-python", type=Path, help="python of the authors' environment (torch, scanpy)")
    parser.add_argument("--child", choices=["sccr", "magic", "roofline", "authors"], help=argparse.SUPPRESS)
    parser.add_argument("--matrix", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "authors":
        print(json.dumps(run_authors(args.n_jobs, str(args.authors), args.matrix, args.output)))
        return
    if args.child:
        child_runs = {"sccr": run_sccr, "magic": run_magic, "roofline": roofline}
        print(json.dumps(child_runs[args.child](args.n_jobs)))
        return
    if (args.authors is None) != (args.authors_python is None):
        parser.error("--authors and --authors-python go together (benchmarks/setup_authors.sh prints both)")
    authors = _AuthorsControl(args.authors, args.authors_python) if args.authors else None

    def child(kind: str, n_jobs: int = args.n_jobs) -> dict | None:
        cmd = [sys.executable, __file__, "--child", kind, "--n-jobs", str(n_jobs)]
        if kind == "authors":
            cmd = authors.command(n_jobs, first=not authors_runs)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            if kind == "magic" and "No module named 'magic'" in proc.stderr:
                return None
            sys.exit(f"{kind} run failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = child("sccr")
    sccr_runs, magic_runs, authors_runs = [], [], []
    for _ in range(args.repeats):  # alternating, so that all see the same machine
        sccr_runs.append(child("sccr"))
        magic_runs.append(child("magic"))
        if authors:
            authors_runs.append(child("authors"))
    magic_runs = [r for r in magic_runs if r is not None]
    one_thread = child("sccr", 1)
    rates = child("roofline")

    def median(xs):
        return float(np.median(xs))

    stages = {s: median([r["timings"][s] for r in sccr_runs]) for s in sccr_runs[0]["timings"]}
    total = median([r["seconds"] for r in sccr_runs])
    magic_total = median([r["seconds"] for r in magic_runs]) if magic_runs else None
    table = floors(stages, sccr_runs[0]["work"], tuple(rates["shape"]), rates)
    scaling = {s: one_thread["timings"][s] / stages[s] for s in stages}
    report = {
        "dataset": "worm_neuron, paper preprocessing, 4186 x 2000, float32",
        "settings": {**SETTINGS, "note": "scCR defaults with sym_final=False (the authors' Worm Neuron setting)"},
        "n_jobs": args.n_jobs,
        "repeats": args.repeats,
        "machine": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "sccr_seconds_median": total,
        "sccr_seconds_runs": [r["seconds"] for r in sccr_runs],
        "sccr_seconds_first_process": first["first_call_seconds"],
        "sccr_first_call_seconds_median": median([r["first_call_seconds"] for r in sccr_runs]),
        "magic_first_call_seconds_median": median([r["first_call_seconds"] for r in magic_runs])
        if magic_runs
        else None,
        "sccr_peak_rss_mb_median": median([r["peak_rss_mb"] for r in sccr_runs]),
        "sccr_peak_rss_before_impute_mb_median": median([r["peak_rss_before_impute_mb"] for r in sccr_runs]),
        "magic_seconds_median": magic_total,
        "magic_seconds_runs": [r["seconds"] for r in magic_runs],
        "magic_peak_rss_mb_median": median([r["peak_rss_mb"] for r in magic_runs]) if magic_runs else None,
        "magic_over_sccr": magic_total / total if magic_total else None,
        **_authors_report(authors, authors_runs, total, args.n_jobs),
        "stage_seconds_median": stages,
        "roofline": rates,
        "stage_floors": table,
        "one_thread_stage_seconds": one_thread["timings"],
        "one_thread_seconds": one_thread["seconds"],
        "speedup_two_threads_per_stage": scaling,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))

    runs = ", ".join(f"{r['seconds']:.2f}" for r in sccr_runs)
    print(
        f"scCR on Worm Neuron, {args.n_jobs} threads, median of {args.repeats} fresh processes, alternating with MAGIC:"
    )
    print(
        f"  sccr  {total:.2f} s (runs {runs}; first call of a process {report['sccr_first_call_seconds_median']:.2f} s), "
        f"peak RSS {report['sccr_peak_rss_mb_median']:.0f} MiB"
    )
    if magic_runs:
        runs = ", ".join(f"{r['seconds']:.2f}" for r in magic_runs)
        print(
            f"  MAGIC {magic_total:.2f} s (runs {runs}; first call {report['magic_first_call_seconds_median']:.2f} s), "
            f"peak RSS {report['magic_peak_rss_mb_median']:.0f} MiB "
            f"-> MAGIC / sccr = {magic_total / total:.2f}"
        )
    else:
        print("  MAGIC skipped: magic-impute is not installed (pip install 'sccr[benchmark]')")
    if authors:
        runs = ", ".join(f"{r['seconds']:.2f}" for r in authors_runs)
        diff = report["authors_output_vs_sccr"]
        print(
            f"  authors' scCR {report['authors_seconds_median']:.2f} s (runs {runs}; first call "
            f"{report['authors_first_call_seconds_median']:.2f} s), peak RSS {report['authors_peak_rss_mb_median']:.0f} MiB "
            f"-> authors / sccr = {report['authors_over_sccr']:.2f}; outputs differ by at most {diff['max_abs_diff']:.2g} "
            f"({100 * diff['share_entries_diff_over_1e-3']:.2f}% of entries by more than 1e-3)"
        )
    print(
        f"  roofline: sgemm {rates['sgemm_gmacs']:.0f} GMAC/s, dgemm {rates['dgemm_gmacs']:.0f} GMAC/s, "
        f"scipy sparse x dense {rates['scipy_spmm_gmacs']:.1f} GMAC/s, propagation kernel "
        f"{rates['propagation_kernel_gmacs']:.1f} GMAC/s, copy {rates['copy_gbs']:.1f} GB/s"
    )
    print("  stage          seconds   floor   x floor   GMAC/s   1 thread / 2 threads")
    for s, row in table.items():
        print(
            f"  {s:<13} {row['seconds']:8.3f} {row['floor_seconds']:7.3f} {row['times_floor']:9.1f} "
            f"{row['gmacs']:8.1f}   {scaling[s]:.2f}"
        )
    print(f"  whole run with 1 thread {one_thread['seconds']:.2f} s ({one_thread['seconds'] / total:.2f}x)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
