"""The engine: k-NN graphs, propagation, the pipeline's stages, matrices and stores, memory plan, checks.

Modules outside this package import only what this ``__init__`` exports; the
way in for a run is :func:`prepare` (then :meth:`Job.execute`) or :func:`run`.

=================  ============================================================
``entry``          the entry: prepare (validate, plan memory, stream) and execute
``pipeline``       the stages of scCR, scFP and scBFP, in order
``genes``          graph genes and the genes that ride along the cell graphs
``graph``          exact cosine k-NN graphs and the signed gene graph
``ann``            approximate k-NN for large numbers of cells
``propagation``    the numba propagation kernel and its chunk loops
``execution``      threads, progress bars and remote executor of a run
``dask``           the Dask executor (optional)
``matrix``         one interface over arrays, sparse matrices, scratch and stored
                   files; every block size
``memory``         the memory plan (estimate, in memory or out of core, refuse)
``checks``         value checks of the matrix to impute
``files``          owner markers and locks, the sweep of stale leftovers, free
                   space, full disks
``checkpoint``     each finished stage kept in a folder; resume after a kill
=================  ============================================================
"""

from .checkpoint import check_folder as check_checkpoint_folder
from .checks import ValueSummary, canonical, check_counts, check_dtype, check_expression, check_shape
from .dask import connect
from .entry import Job, prepare, run
from .files import ELSEWHERE, LIVE, Leftover, Owner, check_free_space, claim, lock_path, no_space_named, size_of, sweep
from .genes import MANY_GRAPH_GENES, GeneSelection, top_variance_genes
from .graph import BATCH_MODES, knn_graph, resolve_knn
from .matrix import PANEL_WIDTH, READ_BLOCK_BYTES, ROW_BLOCK, DenseMatrix, Matrix, StoredInput, dense
from .memory import SKIP_ENV, available_bytes, estimate_peak_bytes
from .pipeline import STAGES, Batches, Decisions, Result, soft_propagate
from .propagation import blend_into

__all__ = [
    "BATCH_MODES",
    "ELSEWHERE",
    "LIVE",
    "MANY_GRAPH_GENES",
    "PANEL_WIDTH",
    "READ_BLOCK_BYTES",
    "ROW_BLOCK",
    "SKIP_ENV",
    "STAGES",
    "Batches",
    "Decisions",
    "DenseMatrix",
    "GeneSelection",
    "Job",
    "Leftover",
    "Matrix",
    "Owner",
    "Result",
    "StoredInput",
    "ValueSummary",
    "available_bytes",
    "blend_into",
    "canonical",
    "check_checkpoint_folder",
    "check_counts",
    "check_dtype",
    "check_expression",
    "check_free_space",
    "check_shape",
    "claim",
    "connect",
    "dense",
    "estimate_peak_bytes",
    "knn_graph",
    "lock_path",
    "no_space_named",
    "prepare",
    "resolve_knn",
    "run",
    "size_of",
    "soft_propagate",
    "sweep",
    "top_variance_genes",
]
