"""Memory guard: refuse a run that cannot fit before it starts, with the estimate and the fix.

:func:`estimate_peak_bytes` adds up what the pipeline allocates on top of the
validated input, stage by stage as :data:`sccr._engine.pipeline.MEMORY_PEAKS` declares them; ``docs/errors.md`` compares it with measured peaks
(``benchmarks/memory.py``). :func:`available_bytes` is the memory this process
may still take: ``MemAvailable`` of ``/proc/meminfo``, lowered to the free part
of a cgroup limit (containers, batch schedulers), with a POSIX fallback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .._errors import InputError
from .._options import Options, format_size
from .ann import search_bytes
from .genes import ride_along_width
from .graph import resolve_knn, symmetric_search_bytes
from .matrix import PANEL_WIDTH, ROW_BLOCK, SIMILARITY_BLOCK_ELEMENTS
from .pipeline import MEMORY_PEAKS

#: Set to 1 to skip the guard (the run may then be killed by the system when memory runs out).
SKIP_ENV = "SCCR_SKIP_MEMORY_CHECK"

#: Bytes per k-NN entry while a graph is built (int64 indices and rows, float32 values,
#: COO/CSR copies while symmetrising) and per entry of a kept graph (float32 + int32).
GRAPH_BUILD_BYTES, GRAPH_KEPT_BYTES = 64, 8
#: Similarity-block temporaries of the k-NN search, in multiples of the float32 block:
#: the block, its negation and partition, the candidate masks and their int64 cumsum.
BLOCK_COPIES = 7


def _parse_limit(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _cgroup_free_bytes() -> int | None:
    """Free part of this process's cgroup memory limit (v2, then v1), or ``None`` without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = _parse_limit(Path(limit_file).read_text())
            usage = _parse_limit(Path(usage_file).read_text())
        except OSError:
            continue
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes ~2^63 for "no limit"
            return max(limit - usage, 0)
    return None


def available_bytes() -> int | None:
    """Memory this process can still allocate without swapping, or ``None`` if unknown."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    cgroup = _cgroup_free_bytes()
    return available if cgroup is None else min(available, cgroup)


def estimate_peak_bytes(
    n_cells: int,
    n_genes: int,
    nnz: int | None,
    *,
    method: str,
    k: int,
    k_gene: int,
    n_jobs: int,
    out_of_core: bool = False,
    output_in_memory: bool = True,
    exact: bool = True,
    input_on_disk: bool = False,
) -> int:
    """Peak bytes a run allocates beyond its validated input.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the input.
    nnz
        Stored entries of a sparse (CSR) input; ``None`` for a dense one.
    method, k, k_gene, n_jobs
        As in :func:`sccr.impute` (``n_jobs`` resolved to a number of threads).
    out_of_core
        The intermediate N x G matrices live in scratch files (only the blocks
        in use take memory), and the neighbour searches load their matrix whole.
    output_in_memory
        The imputed matrix is returned as an array (not streamed to a file).
    exact
        Exact neighbour search (which normalises a copy of its matrix), or the
        approximate one (:func:`sccr._ann.search_bytes`).
    input_on_disk
        The input itself was streamed into a scratch file (with ``out_of_core``):
        it is read in blocks like the intermediate matrices, and ``nnz`` is
        ignored (no sparse copies).
    """
    n, g = int(n_cells), int(n_genes)
    if input_on_disk:
        nnz = None
    matrix = 4 * n * g
    block = BLOCK_COPIES * 4 * min(SIMILARITY_BLOCK_ELEMENTS, max(n, g) ** 2)
    # An exact search normalises a copy of a dense matrix (a scratch file is loaded first,
    # scBFP's transposed input is made contiguous first); a sparse input's copies are counted below.
    exact_search = block + matrix * (2 if out_of_core else 1) + symmetric_search_bytes(n, k + 1)
    dense_input = nnz is None
    beside = {
        None: 0,
        "input": (block + matrix * (2 if input_on_disk else dense_input) + symmetric_search_bytes(n, k + 1))
        if exact
        else search_bytes(n, g, streamed=input_on_disk, n_jobs=n_jobs),
        # scBFP's gene graph: a contiguous transposed copy (loaded from the scratch file first) and its normalised copy.
        "transposed": block + 2 * matrix * dense_input,
        # Chunks of up to ROW_BLOCK cells standardised in float32 and float64, with float64
        # products (measured: about 30 bytes per cell x gene of a chunk), and the correlation blocks.
        "correlations": 32 * min(n, ROW_BLOCK) * g + 2 * 4 * SIMILARITY_BLOCK_ELEMENTS,
        "search": exact_search if exact else search_bytes(n, g, streamed=out_of_core, n_jobs=n_jobs),
        "output": matrix if output_in_memory else 0,
    }
    held = 0 if out_of_core else matrix
    stages = max(held * copies + beside[work] for copies, work in MEMORY_PEAKS[method])
    # Sparse input: the normalised float32 copy and the float64 copy of the exact
    # re-ranking (knn), the CSC copy of every cell-wise propagation, and the rows of a
    # similarity block made dense with as many rows they are multiplied with.
    block_rows = min(n, max(1, SIMILARITY_BLOCK_ELEMENTS // max(n, 1)))
    sparse = 0 if nnz is None else 20 * int(nnz) + 2 * 4 * block_rows * g
    cell_graphs = {"sccr": 3, "scfp": 2, "scbfp": 1}[method]
    # Each cell graph (kept twice while it is symmetrised), and the final graph's distances.
    graphs = (GRAPH_BUILD_BYTES + (cell_graphs * 2 + 1) * GRAPH_KEPT_BYTES) * n * (k + 1)
    gene_graph = (GRAPH_BUILD_BYTES + GRAPH_KEPT_BYTES * 2) * g * (k_gene + 1) if method != "scfp" else 0
    # Each thread propagates one block of 64 columns: start, current, next, anchor, output, mask.
    nodes = max(n, g)
    threads = n_jobs * (21 * nodes * PANEL_WIDTH)
    return stages + sparse + graphs + gene_graph + threads


def estimate_selection_peak_bytes(
    n_cells: int,
    n_genes: int,
    n_graph_genes: int,
    nnz: int | None,
    *,
    method: str,
    k: int,
    k_gene: int,
    n_jobs: int,
    out_of_core: bool = False,
    output_in_memory: bool = True,
    exact: bool = True,
    input_on_disk: bool = False,
) -> int:
    """Peak bytes of a run whose graphs use ``n_graph_genes`` of the ``n_genes`` columns (the others ride along).

    The stages run over the graph genes (:func:`estimate_peak_bytes` of that shape, into
    one N x G_graph matrix, a scratch file when ``out_of_core``) beside a copy of the
    graph genes' columns of the input; then that matrix is held while the riding genes
    go through the propagations in super-panels (:func:`~.genes.ride_along_width`). An
    output in memory (N x all genes) is counted throughout. Linear in ``n_genes``.
    """
    n, g, gg = int(n_cells), int(n_genes), int(n_graph_genes)
    sparse_input = nnz is not None and not input_on_disk
    pipeline = estimate_peak_bytes(
        n,
        gg,
        nnz,
        method=method,
        k=k,
        k_gene=k_gene,
        n_jobs=n_jobs,
        out_of_core=out_of_core,
        output_in_memory=not out_of_core,
        exact=exact,
        input_on_disk=input_on_disk,
    )
    copy = 0 if input_on_disk else (12 * int(nnz) if sparse_input else 4 * n * gg)
    held = 0 if out_of_core else 4 * n * gg
    # Five float32 blocks per super-panel, the CSC copy of a sparse input, the kept cell graphs, the threads.
    ride = 5 * 4 * n * ride_along_width(n) + (12 * int(nnz) if sparse_input else 0)
    graphs = 3 * 2 * GRAPH_KEPT_BYTES * n * (k + 1)
    threads = n_jobs * 21 * n * PANEL_WIDTH
    output = 4 * n * g if output_in_memory else 0
    return output + max(pipeline + copy, held + ride + graphs + threads)


def _free_bytes(folder) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_disk(
    shape: tuple[int, int],
    n_graph_genes: int | None,
    options: Options,
    *,
    out_of_core: bool,
    input_on_disk: bool,
    output_path=None,
) -> None:
    """Refuse a run whose dense output layer (an .h5ad file) or scratch files cannot fit on their disks."""
    n, g = shape
    gg = g if n_graph_genes is None else n_graph_genes
    if output_path is not None and Path(output_path).suffix == ".h5ad":
        folder = Path(output_path).resolve().parent
        free, layer = _free_bytes(folder), 4 * n * g
        if free is not None and layer > free:
            raise InputError(
                f"the imputed layer of {n} cells x {g} genes takes {format_size(layer)} on disk (dense float32, "
                f"uncompressed in .h5ad) but {str(folder)!r} has {format_size(free)} free; write a .zarr store "
                "(compressed), impute fewer genes (genes='hvg' or a list; --genes hvg|FILE), or write to a larger disk"
            )
    if out_of_core:
        folder = options.scratch_dir or tempfile.gettempdir()
        free = _free_bytes(folder)
        scratch = 3 * 4 * n * gg + (4 * n * g if input_on_disk else 0)
        if free is not None and scratch > free:
            raise InputError(
                f"scratch files of {n} cells x {gg} graph genes need about {format_size(scratch)} but {str(folder)!r} "
                f"has {format_size(free)} free; pass scratch_dir= (--scratch-dir) on a larger disk, or impute fewer genes"
            )


def plan(
    shape: tuple[int, int],
    nnz: int | None,
    options: Options,
    *,
    output_in_memory: bool = True,
    input_bytes: int | None = None,
    n_graph_genes: int | None = None,
    output_path=None,
) -> tuple[bool, bool]:
    """``(out_of_core, input_on_disk)`` for a run on a ``shape`` input (``nnz``: stored entries of a sparse one).

    ``input_bytes``: what the input takes once read into memory, for an input still
    in a file (``None``: it is in memory already, and stays there). Each step puts
    more on disk only when the previous one does not fit in ``memory_budget``
    (``options.memory_budget``; default: the memory available now): everything in memory; the intermediate
    matrices in scratch files; then also the input, streamed into one. When even
    that does not fit, :class:`~sccr.InputError` with the estimate and the fixes.
    An unknown amount of available memory, or ``SCCR_SKIP_MEMORY_CHECK=1`` without a
    budget, means in memory. ``n_graph_genes``: the graphs use that many of the genes
    and the others ride along (:func:`estimate_selection_peak_bytes`). ``output_path``:
    the file the layer is written to; with scratch files, both disks are checked
    (:func:`check_disk`).
    """
    step = _plan_memory(shape, nnz, options, output_in_memory, input_bytes, n_graph_genes)
    check_disk(shape, n_graph_genes, options, out_of_core=step[0], input_on_disk=step[1], output_path=output_path)
    return step


def _plan_memory(shape, nnz, options, output_in_memory, input_bytes, n_graph_genes) -> tuple[bool, bool]:
    p = options
    budget = p.memory_budget
    if budget is None:
        if os.environ.get(SKIP_ENV, "") == "1":
            return False, False
        budget = available_bytes()
        if budget is None:
            return False, False
    n, g = shape
    held = 0 if input_bytes is None else input_bytes

    def need(out_of_core: bool, input_on_disk: bool = False, output: bool = output_in_memory) -> int:
        common = dict(
            method=p.method,
            k=p.k,
            k_gene=p.k_gene,
            n_jobs=p.n_jobs,
            out_of_core=out_of_core,
            output_in_memory=output,
            exact=resolve_knn(p.knn, n) == "exact",
            input_on_disk=input_on_disk,
        )
        if n_graph_genes is not None:
            return (0 if input_on_disk else held) + estimate_selection_peak_bytes(n, g, n_graph_genes, nnz, **common)
        return (0 if input_on_disk else held) + estimate_peak_bytes(n, g, nnz, **common)

    steps = [(False, False), (True, False)] + ([(True, True)] if input_bytes is not None else [])
    for step in steps:
        if need(*step) <= budget:
            return step
    if os.environ.get(SKIP_ENV, "") == "1":
        return steps[-1]
    least = need(*steps[-1])
    limit = (
        f"the memory budget is {format_size(budget)}"
        if p.memory_budget is not None
        else f"{format_size(budget)} is available"
    )
    if output_in_memory and need(*steps[-1], output=False) <= budget:
        raise InputError(
            f"the imputed layer of {n} cells x {g} genes takes {format_size(4 * n * g)} in memory (dense float32) "
            f"and the run about {format_size(least)}, but {limit}; impute fewer genes (genes='hvg' or a list of "
            "genes), or impute the file out of core: sccr.impute_file(input, 'imputed.zarr', genes='all') "
            "(command line: sccr impute --genes all INPUT imputed.zarr), which writes the layer panel by panel"
        )
    raise InputError(
        f"imputing {n} cells x {g} genes with {p.method} needs about {format_size(least)} of memory "
        f"even out of core ({format_size(need(False))} in memory) but {limit}; raise "
        "memory_budget= (command line: --memory-budget 8G) if the machine has more, write the output "
        "to a file (the command line streams it), use fewer threads (n_jobs), run on a Dask cluster "
        f"with backend='dask' (--backend dask --scheduler ADDR), or use fewer genes or cells; set "
        f"{SKIP_ENV}=1 to try anyway"
    )
