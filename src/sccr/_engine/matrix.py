"""Matrices as the engine reads and writes them, and every block size, in one place.

One interface, :class:`Matrix`, reads blocks of rows (statistics, correlations,
neighbour search) and of columns (propagation) from whatever holds the matrix:
a numpy array or an array in a file (:class:`DenseMatrix`), a scipy sparse
matrix (:class:`SparseMatrix`), a scratch file of column panels
(:class:`PanelFile`), or an input still in its .h5ad/.zarr file
(``sccr._io.StoredMatrix``). :func:`as_matrix` wraps any of them.
:class:`Workspace` makes the pipeline's intermediate matrices: arrays in memory,
or scratch files when the run is out of core (``memory_budget``), written and
read with ``pwrite``/``pread`` so that only the blocks in use take memory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .execution import current
from .files import Claim, no_space_named, owned_folder

# Block sizes. Changing one changes no result except where its line says so.
#: Columns per propagation chunk, per scratch-file panel and per chunk of the output
#: layer; cells per chunk of the gene-wise stage. 64 float32 columns keep a 4k-node block in L2.
PANEL_WIDTH = 64
#: Rows per block when a matrix is read row by row (statistics, correlations, the
#: approximate search, value checks, output chunks). The column statistics and the gene
#: correlations are float64 sums over these blocks, so their last bits depend on it.
ROW_BLOCK = 4096
#: Similarities held at once by the exact neighbour search (32 MiB of float32).
SIMILARITY_BLOCK_ELEMENTS = 1 << 23
#: Bytes of a block when a stored input is read or copied piece by piece.
READ_BLOCK_BYTES = 64 << 20
#: Bytes of the blocks of genes that ride along (ALGORITHM.md, "Graph genes and propagated genes"),
#: five N x w float32 blocks at once: their start, two propagated copies, the result and the output block.
RIDE_ALONG_BYTES = 1 << 30
#: Bytes of one column slice of a matrix read in row blocks, during approximate scoring.
SLICE_BYTES = 2 << 30
#: Rows of a panel read at once when several panels are gathered into one block.
PANEL_READ_ROWS = 65536


def dense(block) -> np.ndarray:
    """A block as a dense float32 array (sparse blocks made dense)."""
    return block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float32)


def unsigned_indices(M: sp.csr_matrix) -> np.ndarray:
    """The column indices of CSR ``M`` viewed as unsigned integers (the same values, no copy).

    Compiled kernels that index with them skip numba's negative-index wraparound, which
    costs a select per load and can turn vector loads into gathers.
    """
    return M.indices.view(np.uint32 if M.indices.dtype == np.int32 else np.uint64)


class Matrix:
    """A cells x genes float32 matrix read in blocks.

    Subclasses give ``shape`` and :meth:`row_blocks`; the other readers have
    generic versions built on it that subclasses replace where they can do better.
    """

    shape: tuple[int, int]

    def row_blocks(self, rows: int = ROW_BLOCK) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
        """``(start, block)`` for consecutive blocks of ``rows`` rows, in order (sparse sources give CSR blocks)."""
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop`` as a dense float32 array."""
        out = [
            dense(block)[max(0, start - s) : stop - s]
            for s, block in self.row_blocks()
            if s < stop and s + block.shape[0] > start
        ]
        return np.concatenate(out) if out else np.empty((0, self.shape[1]), dtype=np.float32)

    def columns(self, start: int, stop: int) -> np.ndarray:
        """Columns ``start..stop`` of every row as a dense float32 array (one pass over the rows)."""
        stop = min(stop, self.shape[1])
        out = np.empty((self.shape[0], stop - start), dtype=np.float32)
        for s, block in self.row_blocks():
            out[s : s + block.shape[0]] = dense(block[:, start:stop])
        return out

    def to_array(self) -> np.ndarray:
        """The whole matrix as a dense float32 array."""
        out = np.empty(self.shape, dtype=np.float32)
        for s, block in self.row_blocks():
            out[s : s + block.shape[0]] = dense(block)
        return out


class DenseMatrix(Matrix):
    """A matrix held by anything that slices like a 2-D array: a numpy array, an ``h5py.Dataset``, a zarr array."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape = tuple(array.shape)

    def row_blocks(self, rows: int = ROW_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.shape[0], rows):
            yield start, self.rows(start, start + rows)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop], dtype=np.float32)

    def columns(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[:, start:stop], dtype=np.float32)

    def write_rows(self, start: int, block: np.ndarray) -> None:
        self.array[start : start + block.shape[0]] = block

    def write_columns(self, start: int, block: np.ndarray) -> None:
        self.array[:, start : start + block.shape[1]] = block

    def to_array(self) -> np.ndarray:
        """The whole matrix (no copy for an in-memory float32 array)."""
        return np.asarray(self.array, dtype=np.float32)


class SparseMatrix(Matrix):
    """A scipy sparse matrix: CSR row blocks, and columns from a CSC copy made on first use."""

    def __init__(self, M: sp.spmatrix) -> None:
        self.array = sp.csr_matrix(M, dtype=np.float32)
        self.shape = self.array.shape
        self._csc: sp.csc_matrix | None = None

    def row_blocks(self, rows: int = ROW_BLOCK) -> Iterator[tuple[int, sp.csr_matrix]]:
        for start in range(0, self.shape[0], rows):
            yield start, self.array[start : start + rows]

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop].toarray()

    def columns(self, start: int, stop: int) -> np.ndarray:
        if self._csc is None:
            self._csc = sp.csc_matrix(self.array)
        return self._csc[:, start:stop].toarray()

    def to_array(self) -> np.ndarray:
        return self.array.toarray()


class StoredInput(Matrix):
    """An input matrix still in its file (``sccr._io.StoredMatrix``), for :func:`sccr._engine.entry.prepare`.

    Besides the :class:`Matrix` readers it gives ``format`` (``"dense"``, ``"csr"``
    or ``"csc"``), ``nnz`` (``None`` when dense), :meth:`in_memory_bytes`,
    :meth:`read` and :meth:`blocks`, the blocks in the file's own layout.
    """

    format: str
    nnz: int | None

    def in_memory_bytes(self) -> int:
        """Bytes of the float32 matrix once read (CSR: values, indices and row pointers)."""
        n, g = self.shape
        return 4 * n * g if self.nnz is None else 8 * self.nnz + 8 * (n + 1)

    def read(self) -> np.ndarray | sp.spmatrix:
        """The whole matrix in memory (sparse stays sparse)."""
        raise NotImplementedError

    def blocks(self, width: int = PANEL_WIDTH) -> Iterator[tuple[int, int, np.ndarray | sp.spmatrix]]:
        """``(row, column, block)`` covering the matrix in order: row blocks, or for CSC blocks of ``width``-multiple columns."""
        raise NotImplementedError

    def row_blocks(self, rows: int = ROW_BLOCK) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
        for row, _, block in self.blocks():
            if self.format == "csc":
                raise ValueError(
                    "a CSC matrix in a file is read in blocks of columns; read it whole or stream it into a scratch file"
                )
            yield row, block


def as_matrix(M) -> Matrix:
    """``M`` itself if it is a :class:`Matrix`, else one over it (a sparse matrix, an array or a dataset)."""
    if isinstance(M, Matrix):
        return M
    return SparseMatrix(M) if sp.issparse(M) else DenseMatrix(M)


def in_memory(M) -> np.ndarray | sp.csr_matrix:
    """The array or sparse matrix itself for an in-memory matrix, else the whole matrix read into memory."""
    if isinstance(M, (SparseMatrix, DenseMatrix)) and isinstance(M.array, (np.ndarray, sp.spmatrix)):
        return M.array
    return M.to_array() if isinstance(M, Matrix) else M


def _pread_into(fd: int, buffer: np.ndarray, offset: int) -> None:
    view = memoryview(buffer).cast("B")
    done = 0
    while done < view.nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"scratch file ended early at byte {offset + done}")
        done += got


def _pwrite_from(fd: int, buffer: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(buffer)).cast("B")
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


class PanelFile(Matrix):
    """An N x G float32 matrix in a file of column panels, ``width`` columns each.

    Panel ``p`` holds columns ``p * w .. (p + 1) * w`` as a C-ordered N x w block,
    so a panel is one contiguous read and a block of rows is one read per panel.
    Column blocks must start on a panel boundary.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int],
        width: int = PANEL_WIDTH,
        *,
        readonly: bool = False,
        needed: int | None = None,
        where: Path | None = None,
    ) -> None:
        self.path = Path(path)
        #: The folder named when the disk is full (the scratch folder the user chose, not the private one inside it).
        self.where = self.path.parent if where is None else where
        self.shape = (int(shape[0]), int(shape[1]))
        self.width = width
        #: Bytes the run's scratch files need in this folder (named when the disk is full).
        self.needed = needed
        size = 4 * self.shape[0] * self.shape[1]
        if readonly:
            self._fd = os.open(self.path, os.O_RDONLY)
            if os.fstat(self._fd).st_size != size:
                os.close(self._fd)
                raise OSError(
                    f"{self.path} holds {os.path.getsize(self.path)} bytes, not the {size} of a {self.shape} matrix"
                )
        else:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(self._fd, size)

    def _panels(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(first column, width, byte offset)`` of the panels covering columns ``start..stop``."""
        if start % self.width:
            raise ValueError(f"column blocks must start on a multiple of {self.width}, got {start}")
        n = self.shape[0]
        for first in range(start, min(stop, self.shape[1]), self.width):
            yield first, min(self.width, self.shape[1] - first), 4 * n * first

    def columns(self, start: int, stop: int) -> np.ndarray:
        """Columns ``start..stop``: one panel is read in place, several in pieces (:meth:`_read_pieces`)."""
        stop = min(stop, self.shape[1])
        n = self.shape[0]
        out = np.empty((n, stop - start), dtype=np.float32)
        panels = list(self._panels(start, stop))
        if len(panels) == 1 and panels[0][1] == stop - start:
            _pread_into(self._fd, out, panels[0][2])
            return out
        self._read_pieces(out, [(offset, first - start, width) for first, width, offset in panels])
        return out

    def _read_pieces(self, out: np.ndarray, panels: list[tuple[int, int, int]]) -> None:
        """Fill ``out`` from ``(offset, column, width)`` panel ranges: ``out.shape[0]`` rows of ``width`` columns from ``offset`` go to ``out[:, column:]``.

        Each range is read in pieces of at most :data:`PANEL_READ_ROWS` rows (a buffer of 16 MiB per
        thread), on the current execution's threads (the reads and copies release the GIL: 2.2x on 2
        threads for a 1M x 512 slice in the page cache, ``benchmarks/panel_read.py``).
        """
        n = out.shape[0]
        pieces = [
            (offset + 4 * width * row, row, column, min(n, row + PANEL_READ_ROWS) - row, width)
            for offset, column, width in panels
            for row in range(0, n, PANEL_READ_ROWS)
        ]
        size = max((rows * width for _, _, _, rows, width in pieces), default=0)

        def read(share: list[tuple[int, int, int, int, int]]) -> None:
            buffer = np.empty(size, dtype=np.float32)
            for offset, row, column, rows, width in share:
                piece = buffer[: rows * width].reshape(rows, width)
                _pread_into(self._fd, piece, offset)  # a row range of a panel is contiguous
                out[row : row + rows, column : column + width] = piece

        n_jobs = min(current().n_jobs, len(pieces))
        if n_jobs <= 1:
            read(pieces)
        else:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                list(pool.map(read, [pieces[i::n_jobs] for i in range(n_jobs)]))

    def write_columns(self, start: int, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        with no_space_named(self.where, "scratch files", self.needed):
            for first, width, offset in self._panels(start, start + block.shape[1]):
                _pwrite_from(self._fd, block[:, first - start : first - start + width], offset)

    def _row_slices(self, start: int) -> Iterator[tuple[int, int, int]]:
        for first, width, offset in self._panels(0, self.shape[1]):
            yield first, width, offset + 4 * width * start

    def rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        out = np.empty((stop - start, self.shape[1]), dtype=np.float32)
        self._read_pieces(out, [(offset, first, width) for first, width, offset in self._row_slices(start)])
        return out

    def row_blocks(self, rows: int = ROW_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.shape[0], rows):
            yield start, self.rows(start, start + rows)

    def write_rows(self, start: int, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        with no_space_named(self.where, "scratch files", self.needed):
            for first, width, offset in self._row_slices(start):
                _pwrite_from(self._fd, block[:, first : first + width], offset)

    def to_array(self) -> np.ndarray:
        return self.rows(0, self.shape[0])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Workspace:
    """Makes the pipeline's intermediate matrices: numpy arrays, or scratch files when ``out_of_core``.

    Scratch files go to a private folder ``sccr-scratch-*`` inside ``scratch_dir``
    (default: the system's temporary folder), marked with this process as its owner
    (:mod:`.files`), that :meth:`close` removes, also after an error; a later run
    removes one whose owner was killed. Matrices made elsewhere (a checkpoint's) can
    be :meth:`adopt`-ed: freed with the others, but their files are left alone.
    """

    def __init__(self, *, out_of_core: bool = False, scratch_dir: str | os.PathLike | None = None) -> None:
        self.out_of_core = out_of_core
        self.scratch_dir = scratch_dir
        #: Bytes the scratch files may take at once (named when the disk fills up).
        self.scratch_bytes: int | None = None
        self._folder: Path | None = None
        self._marker: Claim | None = None
        self._stores: list[DenseMatrix | PanelFile] = []
        self._adopted: list[Matrix] = []

    @property
    def folder(self) -> Path | None:
        """The scratch folder, once a scratch file was made."""
        return self._folder

    def new(self, name: str, shape: tuple[int, int], width: int = PANEL_WIDTH) -> DenseMatrix | PanelFile:
        """An uninitialised N x G float32 matrix (scratch file: in panels of ``width`` columns)."""
        if not self.out_of_core:
            store = DenseMatrix(np.empty(shape, dtype=np.float32))
        else:
            if self._folder is None:
                self._folder, self._marker = owned_folder(self.scratch_dir)
            store = PanelFile(
                self._folder / f"{name}.f32", shape, width, needed=self.scratch_bytes, where=self._folder.parent
            )
        self._stores.append(store)
        return store

    def adopt(self, store: Matrix) -> Matrix:
        """Free ``store`` with the workspace's own matrices, without deleting its file."""
        self._adopted.append(store)
        return store

    def free(self, store: Matrix) -> None:
        """Release a matrix made by :meth:`new` that is no longer needed: its array is dropped, its scratch file deleted.

        The store is unusable afterwards, whoever still refers to it.
        """
        if store in self._adopted:
            self._adopted.remove(store)
            if isinstance(store, PanelFile):
                store.close()
            elif isinstance(store, DenseMatrix):
                store.array = None
            return
        if store not in self._stores:
            return
        self._stores.remove(store)
        if isinstance(store, PanelFile):
            store.close()
            store.path.unlink(missing_ok=True)
        else:
            store.array = None

    def close(self) -> None:
        for store in list(self._stores) + list(self._adopted):
            self.free(store)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        if self._marker is not None:
            self._marker.release()
            self._marker = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
