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
=================  ============================================================
"""

from .checks import ValueSummary, canonical, check_counts, check_dtype, check_expression, check_shape
from .dask import connect
from .genes import MANY_GRAPH_GENES, GeneSelection, top_variance_genes
from .graph import BATCH_MODES, knn_graph, resolve_knn
from .matrix import PANEL_WIDTH, READ_BLOCK_BYTES, ROW_BLOCK, DenseMatrix, Matrix, StoredInput, dense
from .memory import SKIP_ENV
from .pipeline import Batches, Decisions, Result
from .entry import Job, prepare, run

__all__ = [
    "BATCH_MODES", "MANY_GRAPH_GENES", "Batches", "GeneSelection", "top_variance_genes",
    "PANEL_WIDTH", "READ_BLOCK_BYTES", "ROW_BLOCK", "SKIP_ENV", "Decisions", "DenseMatrix", "Job", "Matrix",
    "Result", "StoredInput", "ValueSummary", "canonical", "check_counts", "check_dtype", "check_expression",
    "check_shape", "connect", "dense", "knn_graph", "prepare", "resolve_knn", "run",
]
