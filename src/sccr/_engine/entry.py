"""The one entry into the engine: prepare (validate, plan memory, read or stream the input), then execute.

Every face (estimator, AnnData functions, command line, benchmark) goes through
:func:`prepare` and :meth:`Job.execute`, or :func:`run` which does both::

    with prepare(X, options) as job:  # checks X, plans memory, streams a stored input if it must
        result = job.execute(out=store)  # the stages, into ``out`` (default: a new array)
        ...  # the face stores the result
        job.commit()  # done: a checkpoint is deleted (else it is kept for a rerun)
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import scipy.sparse as sp

from .._errors import InputError
from .._options import Options
from .checkpoint import Checkpoint, fingerprint, stage_matrices
from .checks import ValueSummary, canonical, check_expression
from .execution import Execution, executing
from .files import ELSEWHERE, check_free_space, scratch_parent, sweep
from .genes import GeneSelection, check_batches, check_selection
from .graph import resolve_knn
from .matrix import Matrix, PanelFile, StoredInput, Workspace
from .memory import plan
from .pipeline import MATRIX_STATES, MEMORY_PEAKS, STAGES, Batches, Decisions, Result, run_stages, stage_names


def _stream_into(stored: StoredInput, store: PanelFile, k: int, k_gene: int | None) -> PanelFile:
    """Copy a stored input into ``store`` block by block, checking it on the way (the messages of :func:`check_expression`)."""
    summary = ValueSummary(stored.shape)
    for row, col, block in stored.blocks(width=store.width):
        block = canonical(block) if sp.issparse(block) else block
        summary.add(block, row, col)
        if summary.n_nonfinite or summary.minimum < 0:
            continue  # refused below; read on only to count the bad values
        values = block.toarray() if sp.issparse(block) else block
        if stored.format == "csc":
            store.write_columns(col, values)
        else:
            store.write_rows(row, values)
    summary.check_expression(stored.shape, k, k_gene)
    return store


class Job:
    """A validated and planned run; owns the workspace of its scratch files (closed on exit).

    Attributes
    ----------
    X
        The checked input: a float32 array or CSR matrix, or a scratch file it was streamed into.
    options
        The validated :class:`~sccr._options.Options`.
    decisions
        What was decided: threads, neighbour search, in memory or out of core, the stage resumed after.
    notes
        What preparing found and did, for the faces to show: stale files of killed runs
        removed, a checkpoint resumed or discarded.
    """

    def __init__(
        self,
        X,
        options: Options,
        decisions: Decisions,
        execution: Execution,
        workspace: Workspace,
        checkpoint: Checkpoint | None = None,
        notes: list[str] | None = None,
        genes: GeneSelection | None = None,
        batches: Batches | None = None,
    ) -> None:
        self.X, self.options, self.decisions = X, options, decisions
        self.genes, self.batches = genes, batches
        self._execution, self._workspace, self._checkpoint = execution, workspace, checkpoint
        self.notes = notes or []
        #: Seconds spent preparing, reported with the stages' (``"fingerprint"``: hashing the input for a checkpoint).
        self.timings: dict[str, float] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.X.shape)

    def execute(self, *, out: Matrix | None = None, chunk: int | None = None) -> Result:
        """Run the stages into ``out`` (a writable matrix, e.g. a dataset of the output file; default: a new array)."""
        extra = {} if chunk is None else {"chunk": chunk}
        with executing(self._execution):
            result = run_stages(
                self.X,
                self.options,
                workspace=self._workspace,
                out=out,
                genes=self.genes,
                batches=self.batches,
                checkpoint=self._checkpoint,
                **extra,
            )
        result.decisions = self.decisions
        result.timings.update(self.timings)
        return result

    def commit(self) -> None:
        """The result is stored: delete the checkpoint, if any (a job closed without it keeps its checkpoint)."""
        if self._checkpoint is not None:
            self._checkpoint.finish()
            self._checkpoint = None

    def close(self) -> None:
        try:
            self._workspace.close()
        finally:
            if self._checkpoint is not None:
                self._checkpoint.close()
                self._checkpoint = None

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scratch_bytes(shape: tuple[int, int], method: str, input_on_disk: bool) -> int:
    """Bytes of the scratch files of an out-of-core run at their peak (the N x G matrices held at once)."""
    n, g = shape
    return 4 * n * g * (max(copies for copies, _ in MEMORY_PEAKS[method]) + input_on_disk)


def checkpoint_bytes(shape: tuple[int, int], options: Options) -> int:
    """Bytes a checkpoint of this run takes at its peak: its N x G matrices, and an allowance for the graphs."""
    n, g = shape
    matrices = stage_matrices((stage.keep for stage in STAGES[options.method]), MATRIX_STATES)
    return 4 * n * g * matrices + 3 * 16 * n * (options.k + 1) + 32 * g * (options.k_gene + 1)


def _swept(folder: Path) -> list[str]:
    """Notes on the leftovers of killed runs in ``folder``: those removed, and those of other hosts."""
    return [item.describe() for item in sweep(folder) if item.outcome in ("removed", "restored", ELSEWHERE)]


def prepare(
    source,
    options: Options,
    *,
    output_in_memory: bool = True,
    checkpoint: str | os.PathLike | None = None,
    disk: list[tuple[Path, int, str]] = (),
    genes: GeneSelection | None = None,
    batches: Batches | None = None,
    output_path=None,
) -> Job:
    """Check ``source`` and plan the run's memory and disk before any work.

    ``source``: an array or sparse matrix in memory, or a :class:`~.matrix.StoredInput`
    (an input still in its file), which is read into memory, or streamed into a
    scratch file and checked block by block when only that fits. A run that fits
    nowhere is refused (:class:`~sccr.InputError`) here. ``checkpoint``: a folder
    where each finished stage is kept, and from which a rerun of the same input and
    options resumes (:mod:`.checkpoint`). ``disk``: what the caller will write besides
    (``(folder, bytes, what)``, e.g. the output file), checked with the scratch files
    and the checkpoint against the free space of each file system. Stale scratch
    folders of killed runs are removed first (``Job.notes`` names them). ``genes``:
    graph genes and imputed genes (``None``: all genes are both); ``batches``: batch
    of every cell; ``output_path``: the file the imputed layer is written to (its disk
    space is checked).
    """
    k_gene = None if options.method == "scfp" else options.k_gene
    if genes is not None:
        check_selection(genes, tuple(source.shape), options.method, options.k_gene)
        if genes.trivial:
            genes = None
    if batches is not None:
        check_batches(batches.codes, source.shape[0], options.k, batches.mode, batches.names)
    if checkpoint is not None and genes is not None:
        raise InputError(
            "a checkpoint keeps the stages of the graph genes only, not of genes riding along; run without "
            "checkpoint= (--checkpoint), or impute only the graph genes (genes='hvg', --genes hvg)"
        )
    n_graph = None if genes is None else int(genes.graph.size)
    notes = _swept(scratch_parent(options.scratch_dir))
    workspace = Workspace(scratch_dir=options.scratch_dir)
    store = None
    try:
        if checkpoint is not None:
            store = Checkpoint.lock(checkpoint)
        if isinstance(source, StoredInput):
            shape, nnz = source.shape, source.nnz
            out_of_core, input_on_disk = plan(
                shape,
                nnz,
                options,
                output_in_memory=output_in_memory,
                input_bytes=source.in_memory_bytes(),
                n_graph_genes=n_graph,
                output_path=output_path,
            )
        else:
            X = check_expression(source, options.k, k_gene=k_gene)
            shape, nnz = X.shape, (X.nnz if sp.issparse(X) else None)
            out_of_core, input_on_disk = plan(
                shape, nnz, options, output_in_memory=output_in_memory, n_graph_genes=n_graph, output_path=output_path
            )
        workspace.out_of_core = out_of_core
        needs = list(disk)
        if out_of_core:
            workspace.scratch_bytes = scratch_bytes(shape, options.method, input_on_disk)
            needs.append((scratch_parent(options.scratch_dir), workspace.scratch_bytes, "the scratch files"))
        if store is not None:
            store.needed = checkpoint_bytes(shape, options)
            needs.append((store.folder, store.needed - store.held_bytes(), "the checkpoint"))
        check_free_space(needs)
        if isinstance(source, StoredInput):
            if input_on_disk:
                X = _stream_into(source, workspace.new("X", source.shape), options.k, k_gene)
            else:
                X = check_expression(source.read(), options.k, k_gene=k_gene)
        remote = None
        if options.backend == "dask":
            from .dask import resolve_executor

            remote = resolve_executor(options.client)
        decisions = Decisions(
            n_jobs=options.n_jobs,
            knn_used=resolve_knn(options.knn, X.shape[0]),
            out_of_core=out_of_core,
            input_on_disk=input_on_disk,
            scheduler=None if remote is None else remote.address,
        )
        timings = {}
        if store is not None:
            start = time.perf_counter()
            store.attach(fingerprint(X, options), stage_names(options.method))
            timings["fingerprint"] = time.perf_counter() - start
            notes += store.notes
            decisions = replace(decisions, resumed_after=store.stage)
        job = Job(
            X,
            options,
            decisions,
            Execution(options.n_jobs, options.progress, remote),
            workspace,
            store,
            notes,
            genes,
            batches,
        )
        job.timings = timings
        return job
    except BaseException:
        workspace.close()
        if store is not None:
            store.close()
        raise


def run(source, options: Options) -> Result:
    """:func:`prepare` and execute into a new array (``Result.imputed``)."""
    with prepare(source, options) as job:
        result = job.execute()
        job.commit()
        return result
