"""The one entry into the engine: prepare (validate, plan memory, read or stream the input), then execute.

Every face (estimator, AnnData functions, command line, benchmark) goes through
:func:`prepare` and :meth:`Job.execute`, or :func:`run` which does both::

    with prepare(X, options) as job:      # checks X, plans memory, streams a stored input if it must
        result = job.execute(out=store)   # the stages, into ``out`` (default: a new array)
"""

from __future__ import annotations

import scipy.sparse as sp

from .._options import Options
from .checks import ValueSummary, canonical, check_expression
from .execution import Execution, executing
from .genes import GeneSelection, check_batches, check_selection
from .graph import resolve_knn
from .matrix import Matrix, PanelFile, StoredInput, Workspace
from .memory import plan
from .pipeline import Batches, Decisions, Result, run_stages


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
        What was decided: threads, neighbour search, in memory or out of core.
    """

    def __init__(
        self, X, options: Options, decisions: Decisions, execution: Execution, workspace: Workspace,
        genes: GeneSelection | None = None, batches: Batches | None = None,
    ) -> None:
        self.X, self.options, self.decisions = X, options, decisions
        self.genes, self.batches = genes, batches
        self._execution, self._workspace = execution, workspace

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.X.shape)

    def execute(self, *, out: Matrix | None = None, chunk: int | None = None) -> Result:
        """Run the stages into ``out`` (a writable matrix, e.g. a dataset of the output file; default: a new array)."""
        extra = {} if chunk is None else {"chunk": chunk}
        with executing(self._execution):
            result = run_stages(
                self.X, self.options, workspace=self._workspace, out=out, genes=self.genes, batches=self.batches, **extra
            )
        result.decisions = self.decisions
        return result

    def close(self) -> None:
        self._workspace.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepare(
    source, options: Options, *, output_in_memory: bool = True, genes: GeneSelection | None = None,
    batches: Batches | None = None, output_path=None,
) -> Job:
    """Check ``source`` and plan the run's memory before any work.

    ``source``: an array or sparse matrix in memory, or a :class:`~.matrix.StoredInput`
    (an input still in its file), which is read into memory, or streamed into a
    scratch file and checked block by block when only that fits. A run that fits
    nowhere is refused (:class:`~sccr.InputError`) here. ``genes``: graph genes and
    imputed genes (``None``: all genes are both); ``batches``: batch of every cell;
    ``output_path``: the file the imputed layer is written to (its disk space is checked).
    """
    k_gene = None if options.method == "scfp" else options.k_gene
    if genes is not None:
        check_selection(genes, tuple(source.shape), options.method, options.k_gene)
        if genes.trivial:
            genes = None
    if batches is not None:
        check_batches(batches.codes, source.shape[0], options.k, batches.mode, batches.names)
    n_graph = None if genes is None else int(genes.graph.size)
    workspace = Workspace(scratch_dir=options.scratch_dir)
    try:
        if isinstance(source, StoredInput):
            out_of_core, input_on_disk = plan(
                source.shape, source.nnz, options, output_in_memory=output_in_memory, input_bytes=source.in_memory_bytes(),
                n_graph_genes=n_graph, output_path=output_path,
            )
            workspace.out_of_core = out_of_core
            if input_on_disk:
                X = _stream_into(source, workspace.new("X", source.shape), options.k, k_gene)
            else:
                X = check_expression(source.read(), options.k, k_gene=k_gene)
        else:
            X = check_expression(source, options.k, k_gene=k_gene)
            nnz = X.nnz if sp.issparse(X) else None
            out_of_core, input_on_disk = plan(
                X.shape, nnz, options, output_in_memory=output_in_memory, n_graph_genes=n_graph, output_path=output_path
            )
            workspace.out_of_core = out_of_core
        remote = None
        if options.backend == "dask":
            from .dask import resolve_executor

            remote = resolve_executor(options.client)
        decisions = Decisions(
            n_jobs=options.n_jobs, knn_used=resolve_knn(options.knn, X.shape[0]), out_of_core=out_of_core,
            input_on_disk=input_on_disk, scheduler=None if remote is None else remote.address,
        )
        return Job(X, options, decisions, Execution(options.n_jobs, options.progress, remote), workspace, genes, batches)
    except BaseException:
        workspace.close()
        raise


def run(source, options: Options) -> Result:
    """:func:`prepare` and execute into a new array (``Result.imputed``)."""
    with prepare(source, options) as job:
        return job.execute()

