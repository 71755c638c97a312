"""Command line: ``sccr impute``, ``sccr clean``, ``sccr tune``, ``sccr diagnose``, ``sccr demo``, ``sccr benchmark``.

Exit codes: 0 success, 2 bad input or usage, 1 internal fault, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM, e.g. a batch scheduler's time limit).
Errors are one line on standard error, prefixed ``sccr: error:``; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from ._versions import __version__

EXIT_OK, EXIT_FAULT, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run cleans up as on Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


#: How long after a swallowed Ctrl-C or SIGTERM the signal is sent again (seconds).
REDELIVERY_DELAY = 0.01


def _redeliver_interrupts(previous):
    """A ``sys.unraisablehook`` that sends a swallowed Ctrl-C or SIGTERM again.

    A signal's exception raised while Python runs a weakref callback or a ``__del__``
    is printed and dropped ("Exception ignored in ..."), and the run would go on as if
    never stopped. The same signal is sent again shortly, from a timer thread, so that
    it lands in the run's own code (through the same handler, deferrals included);
    any other unraisable exception goes to ``previous``.
    """
    import os
    import signal
    import threading

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            signum = signal.SIGTERM if issubclass(unraisable.exc_type, _Terminated) else signal.SIGINT
            threading.Timer(REDELIVERY_DELAY, os.kill, (os.getpid(), signum)).start()
            return
        previous(unraisable)

    return hook


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(EXIT_USAGE, f"sccr: error: {message} (see '{self.prog} --help')\n")


def _add_options(p: argparse.ArgumentParser) -> None:
    """The imputation options as flags, derived from :class:`sccr._options.Options` (defaults, choices, help)."""
    from ._options import cli_fields, cli_flag

    for f in cli_fields():
        help_text = _plain_doc(f.metadata["doc"])
        if f.metadata["cli"] is bool:  # a switch that turns a default-on option off
            p.add_argument(cli_flag(f), dest=f.name, action="store_false", default=f.default, help=help_text)
            continue
        default = "all cores" if f.name == "n_jobs" else ("none" if f.default is None else f.default)
        p.add_argument(
            cli_flag(f),
            dest=f.name,
            type=f.metadata["cli"],
            default=f.default,
            choices=f.metadata["choices"],
            metavar=None if f.metadata["choices"] else f.name.upper().replace("_", "-"),
            help=f"{help_text} (default: {default})",
        )


def _plain_doc(doc: str) -> str:
    """An option's docstring text for ``--help``: without reStructuredText markup, % escaped for argparse."""
    return doc.replace("``", "").replace(":func:", "").replace("%", "%%")


def _add_impute(sub) -> None:
    p = sub.add_parser(
        "impute",
        help="impute an .h5ad file or .zarr store",
        description="Impute INPUT (.h5ad or .zarr) with scCR and write OUTPUT (atomically; INPUT is never modified). "
        "OUTPUT is a zarr store when its name ends in .zarr, an .h5ad file when it ends in .h5ad. The imputed layer "
        "is written block by block; the input matrix is streamed into a scratch file when the run fits in memory only so.",
    )
    p.add_argument("input", metavar="INPUT", help="an .h5ad file or a .zarr store")
    p.add_argument("output", metavar="OUTPUT", help="an .h5ad file, or a .zarr store")
    p.add_argument("--layer", default=None, help="layer to impute instead of X")
    p.add_argument(
        "--key-added", default="sccr", help="name of the output layer, uns, obsp and varp entries (default: sccr)"
    )
    p.add_argument(
        "--preprocess",
        default="none",
        choices=["paper", "none"],
        help="'paper': INPUT holds raw counts, apply the paper's preprocessing first; 'none' (default): INPUT is log-normalised",
    )
    p.add_argument(
        "--genes",
        default="all",
        metavar="all|hvg|FILE",
        help="genes imputed: all (default), hvg (the graph genes only), or a FILE of gene names, one per line (with the graph genes); the layer covers every gene, those not imputed keep their input values",
    )
    p.add_argument(
        "--mask-var",
        default=None,
        metavar="COLUMN",
        help="boolean var column of the genes the graphs are built from (default: highly_variable when present, else --n-top-genes, else every gene)",
    )
    p.add_argument(
        "--n-top-genes",
        type=int,
        default=None,
        help="--preprocess none: without a mask, build the graphs from this many genes of highest variance; --preprocess paper: the genes it keeps (default: 2000)",
    )
    p.add_argument(
        "--batch-key",
        default=None,
        metavar="COLUMN",
        help="obs column of batches: every cell graph finds neighbours batch by batch",
    )
    p.add_argument(
        "--batch-mode",
        default="balanced",
        choices=["balanced", "within"],
        help="with --batch-key: balanced (about (k+1)/B neighbours from each of B batches; default) or within (own batch only)",
    )
    _add_options(p)
    p.set_defaults(handler=_impute)
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="dask scheduler for --backend dask, e.g. tcp://host:8786 (default: start a local cluster of --n-jobs single-threaded worker processes)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="keep each finished stage in DIR (created if missing): rerunning the same command after a kill resumes after the last finished stage, with the same output; deleted once OUTPUT is written",
    )
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def _add_clean(sub) -> None:
    p = sub.add_parser(
        "clean",
        help="remove what killed sccr runs left behind",
        description="Remove from each DIR what sccr runs that were killed (SIGKILL, out of memory, power loss) left "
        "there: hidden temporary outputs (.OUTPUT.*.tmp.h5ad, .tmp.zarr) with their lock files, and sccr-scratch-* "
        "folders. What belongs to a run that is still running, or to a run on another host, is kept and named. "
        "sccr impute does the same in OUTPUT's folder and the scratch folder when it starts.",
    )
    p.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help="folders to clean (default: the system's temporary folder, where scratch folders go)",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(handler=_clean)


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="impute the bundled Worm Neuron data and score clustering",
        description="Run scCR on the bundled Worm Neuron data set (paper's preprocessing and settings) and print raw vs imputed clustering ARI/NMI/CA with time and peak memory.",
    )
    p.add_argument("--seeds", default="0,1,2", help="KMeans seeds, comma-separated (default: 0,1,2)")
    p.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    p.set_defaults(handler=_demo)


def _add_benchmark(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="run the paper's evaluation against baselines",
        description="Run the paper's evaluation protocol (clustering, MCAR and MNAR dropout recovery) on labelled "
        ".h5ad files of raw counts for several methods; append one record per data set x method x task x rate x seed "
        "to OUT/results.jsonl (a rerun skips records already there), then write OUT/summary.md and figures.",
    )
    p.add_argument(
        "datasets",
        nargs="+",
        metavar="DATA.h5ad",
        help="raw counts with a label column, or 'worm_neuron' for the bundled set",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument(
        "--methods",
        default="raw,sccr,scfp,scbfp,magic,alra,knn",
        help="comma-separated (default: all: raw,sccr,scfp,scbfp,magic,alra,knn)",
    )
    p.add_argument("--tasks", default="clustering,mcar,mnar", help="comma-separated (default: clustering,mcar,mnar)")
    p.add_argument("--rates", default="0.2,0.4,0.8", help="dropout rates, comma-separated (default: 0.2,0.4,0.8)")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (default: 0,1,2)")
    p.add_argument("--label-key", default="celltype", help="obs column with the cell types (default: celltype)")
    p.add_argument(
        "--genes-dir",
        default=None,
        metavar="DIR",
        help="keep the genes listed in DIR/NAME.genes.txt when it exists (e.g. the reference's lists)",
    )
    p.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--no-figures", action="store_true", help="write results and summary only")
    p.add_argument("--force", action="store_true", help="discard OUT/results.jsonl and recompute everything")
    p.add_argument("--quiet", action="store_true", help="no progress bar or notices")
    p.set_defaults(handler=_benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sccr", description="scCR imputation of single-cell RNA-seq data (.h5ad or .zarr in, .h5ad or .zarr out)."
    )
    parser.add_argument("--version", action="version", version=f"sccr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    from .tl._diagnose import add_cli as _add_tune_and_diagnose

    for add in (_add_impute, _add_clean, _add_demo, _add_benchmark, _add_tune_and_diagnose):
        add(sub)
    for command in sub.choices.values():  # also accepted after the command; SUPPRESS keeps the top-level value
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
        )
    return parser


def _impute(args) -> None:
    """``sccr impute``, on the dask cluster of ``--backend dask --scheduler`` when asked."""
    from ._errors import InputError

    if args.backend == "local":
        if args.scheduler is not None:
            raise InputError("--scheduler is only used with --backend dask; add --backend dask")
        return _impute_on(args, None)
    from ._engine import connect

    with connect(args.scheduler, n_workers=args.n_jobs) as client:
        _impute_on(args, client)


def _impute_on(args, client) -> None:
    from ._anndata import impute_file
    from ._options import cli_fields

    echo = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
    options = {f.name: getattr(args, f.name) for f in cli_fields()}
    model = impute_file(
        args.input,
        args.output,
        layer=args.layer,
        key_added=args.key_added,
        preprocess=args.preprocess,
        genes=_genes(args.genes),
        mask_var=args.mask_var,
        batch_key=args.batch_key,
        batch_mode=args.batch_mode,
        n_top_genes=args.n_top_genes,
        force=args.force,
        checkpoint=args.checkpoint,
        echo=echo,
        **options,
        progress=False if args.quiet else None,
        client=client,
    )
    n, g = model.cell_graph_.shape[0], model.n_features_in_
    where = (
        "in memory"
        if not model.out_of_core_
        else ("out of core, input streamed" if model.input_on_disk_ else "out of core")
    )
    echo(
        f"imputed {n} cells x {g} genes with {args.method} ({where}, {model.knn_used_} neighbours) in {time.perf_counter() - start:.2f} s"
    )
    echo(f"wrote {args.output} (layer {args.key_added!r})")


def _genes(value: str):
    """``all``, ``hvg``, or the gene names listed in the file ``value`` (one per line; blank lines and # comments skipped)."""
    from pathlib import Path

    from ._errors import InputError

    if value in ("all", "hvg"):
        return value
    path = Path(value)
    if not path.is_file():
        raise InputError(f"--genes must be all, hvg or a file of gene names, one per line; {value!r} is not a file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise InputError(f"--genes file {value!r} lists no gene; write one gene name per line")
    return names


def _clean(args) -> None:
    """``sccr clean``: sweep each folder, one line per leftover found."""
    import tempfile
    from pathlib import Path

    from ._engine import sweep
    from ._errors import InputError
    from ._options import format_size

    folders = [Path(d) for d in args.dirs] or [Path(tempfile.gettempdir())]
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"folder {str(folder)!r} does not exist; pass the folder of an OUTPUT or a scratch folder")
    freed = found = 0
    for folder in folders:
        for item in sweep(folder, dry_run=args.dry_run):
            found += 1
            freed += item.size if item.outcome in ("removed", "stale") else 0
            print(item.describe(), file=sys.stdout)
    verb = "would free" if args.dry_run else "freed"
    print(f"{found} leftover(s) found; {verb} {format_size(freed)}" if found else "nothing to clean", file=sys.stdout)


def _demo(args) -> None:
    from ._benchmark.demo import run_demo
    from ._errors import InputError

    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    run_demo(seeds=seeds, n_jobs=args.n_jobs)


def _one_line(message: object) -> str:
    return " ".join(str(message).splitlines())


def _split(flag: str, text: str, kind):
    from ._errors import InputError

    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} must be a comma-separated list of {kind.__name__} values, got {text!r}") from None


def _benchmark(args) -> None:
    from pathlib import Path

    from ._benchmark.runner import benchmark

    results = Path(args.out) / "results.jsonl"
    echo = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    benchmark(
        args.datasets,
        out=args.out,
        methods=_split("--methods", args.methods, str),
        tasks=_split("--tasks", args.tasks, str),
        rates=_split("--rates", args.rates, float),
        seeds=_split("--seeds", args.seeds, int),
        label_key=args.label_key,
        genes_dir=args.genes_dir,
        n_jobs=args.n_jobs,
        figures=not args.no_figures,
        resume=not args.force,
        progress=False if args.quiet else None,
        echo=echo,
    )
    echo(
        f"wrote {results}, {Path(args.out) / 'summary.md'}"
        + ("" if args.no_figures else f" and {Path(args.out) / 'figures'}/")
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ._errors import InputError

    def warn_line(message, category, filename, lineno, file=None, line=None):
        print(f"sccr: warning: {message}", file=sys.stderr)

    warnings.showwarning = warn_line
    try:
        args.handler(args)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        print(f"sccr: error: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except InputError as err:
        if args.debug:
            raise
        print(f"sccr: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        if args.debug:
            raise
        print(
            f"sccr: error: internal fault ({type(err).__name__}: {_one_line(err)}); rerun with --debug and report it",
            file=sys.stderr,
        )
        return EXIT_FAULT
    return EXIT_OK


def entry() -> None:
    """The ``sccr`` program: :func:`main`, with SIGTERM cleaned up like Ctrl-C."""
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)
    sys.unraisablehook = _redeliver_interrupts(sys.unraisablehook)
    sys.exit(main())


if __name__ == "__main__":
    entry()
