"""Where the pipeline's N x G float32 matrices live: in memory, in scratch files, or in the output file.

Every stage reads and writes its dense matrices through the small interface of
:class:`SliceStore` and :class:`PanelFile`: blocks of columns (what the cell-wise
propagations use), blocks of rows (the gene stage, the statistics, the neighbour
search). In memory they are numpy arrays; out of core (``memory_budget``), they
are files of column panels in a scratch folder, read and written with ``pread``
and ``pwrite`` so that only the blocks in use take memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Columns per panel of a scratch file: the width of the propagation chunks.
PANEL_WIDTH = 64
#: Rows per block when a whole matrix is read row by row (statistics, neighbour search).
ROW_BLOCK = 16384


class SliceStore:
    """A matrix held by anything that slices like a 2-D array: a numpy array or an ``h5py.Dataset``."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape = tuple(array.shape)

    def columns(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[:, start:stop])

    def write_columns(self, start: int, block: np.ndarray) -> None:
        self.array[:, start : start + block.shape[1]] = block

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def write_rows(self, start: int, block: np.ndarray) -> None:
        self.array[start : start + block.shape[0]] = block

    def iter_row_blocks(self, rows: int = ROW_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` for consecutive blocks of ``rows`` rows, in order."""
        for start in range(0, self.shape[0], rows):
            yield start, self.rows(start, start + rows)

    def to_array(self) -> np.ndarray:
        """The whole matrix as a float32 numpy array (no copy for an in-memory array)."""
        return np.asarray(self.array, dtype=np.float32)


def as_store(M) -> SliceStore:
    """``M`` itself if it is a store, else a :class:`SliceStore` over it (an array, a dataset)."""
    return M if isinstance(M, SliceStore) else SliceStore(M)


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


class PanelFile(SliceStore):
    """An N x G float32 matrix in a file of column panels, ``PANEL_WIDTH`` columns each.

    Panel ``p`` holds columns ``p * w .. (p + 1) * w`` as a C-ordered N x w block,
    so a panel is one contiguous read and a block of rows is one read per panel.
    Column blocks must start on a panel boundary.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], width: int = PANEL_WIDTH) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.width = width
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, 4 * self.shape[0] * self.shape[1])

    def _panels(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(first column, width, byte offset)`` of the panels covering columns ``start..stop``."""
        if start % self.width:
            raise ValueError(f"column blocks must start on a multiple of {self.width}, got {start}")
        n = self.shape[0]
        for first in range(start, min(stop, self.shape[1]), self.width):
            yield first, min(self.width, self.shape[1] - first), 4 * n * first

    def columns(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[1])
        out = np.empty((self.shape[0], stop - start), dtype=np.float32)
        for first, width, offset in self._panels(start, stop):
            if first == start and width == stop - start:
                _pread_into(self._fd, out, offset)
            else:
                panel = np.empty((self.shape[0], width), dtype=np.float32)
                _pread_into(self._fd, panel, offset)
                out[:, first - start : first - start + width] = panel
        return out

    def write_columns(self, start: int, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        for first, width, offset in self._panels(start, start + block.shape[1]):
            _pwrite_from(self._fd, block[:, first - start : first - start + width], offset)

    def _row_slices(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        for first, width, offset in self._panels(0, self.shape[1]):
            yield first, width, offset + 4 * width * start

    def rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        out = np.empty((stop - start, self.shape[1]), dtype=np.float32)
        buffer = np.empty((stop - start) * self.width, dtype=np.float32)
        for first, width, offset in self._row_slices(start, stop):
            part = buffer[: (stop - start) * width].reshape(stop - start, width)
            _pread_into(self._fd, part, offset)  # a row range of a panel is contiguous
            out[:, first : first + width] = part
        return out

    def write_rows(self, start: int, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        for first, width, offset in self._row_slices(start, start + block.shape[0]):
            _pwrite_from(self._fd, block[:, first : first + width], offset)

    def to_array(self) -> np.ndarray:
        return self.rows(0, self.shape[0])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Workspace:
    """Makes the pipeline's intermediate matrices: numpy arrays, or scratch files when ``out_of_core``.

    Scratch files go to a private folder inside ``scratch_dir`` (default: the
    system's temporary folder) that :meth:`close` removes, also after an error.
    """

    def __init__(self, *, out_of_core: bool = False, scratch_dir: str | os.PathLike | None = None) -> None:
        self.out_of_core = out_of_core
        self.scratch_dir = scratch_dir
        self._folder: Path | None = None
        self._stores: list[SliceStore] = []

    def new(self, name: str, shape: tuple[int, int], width: int = PANEL_WIDTH) -> SliceStore:
        """An uninitialised N x G float32 matrix (scratch file: in panels of ``width`` columns)."""
        if not self.out_of_core:
            store = SliceStore(np.empty(shape, dtype=np.float32))
        else:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="sccr-scratch-", dir=self.scratch_dir))
            store = PanelFile(self._folder / f"{name}.f32", shape, width)
        self._stores.append(store)
        return store

    def free(self, store: SliceStore) -> None:
        """Release a matrix made by :meth:`new` that is no longer needed: its array is dropped, its scratch file deleted.

        The store is unusable afterwards, whoever still refers to it.
        """
        if store not in self._stores:
            return
        self._stores.remove(store)
        if isinstance(store, PanelFile):
            store.close()
            store.path.unlink(missing_ok=True)
        else:
            store.array = None

    def close(self) -> None:
        for store in list(self._stores):
            self.free(store)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
