"""Reading and writing AnnData files (.h5ad and .zarr) safely: clear errors in, blocks streamed, atomic writes out."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset, write_elem

from ._engine import (
    ELSEWHERE,
    PANEL_WIDTH,
    READ_BLOCK_BYTES,
    ROW_BLOCK,
    Owner,
    StoredInput,
    check_dtype,
    check_shape,
    claim,
    lock_path,
    size_of,
    sweep,
)
from ._errors import InputError


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr store (a folder with zarr v2 or v3 metadata)."""
    return path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())


def _format_of_input(path: Path) -> str:
    """``"h5ad"`` or ``"zarr"``: what ``path`` holds, or an InputError saying what is wrong with it."""
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        if is_zarr(path):
            return "zarr"
        raise InputError(
            f"input {str(path)!r} is a folder but not a zarr store; pass an .h5ad file or a .zarr store written by anndata"
        )
    if not h5py.is_hdf5(path):
        raise InputError(
            f"input {str(path)!r} is not an HDF5/.h5ad file (nor a .zarr store); convert it with anndata (e.g. sc.read_10x_mtx(...).write_h5ad(...))"
        )
    return "h5ad"


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


@contextmanager
def _readable(path: Path, element: str | None = None) -> Iterator[None]:
    """Turn any failure to decode ``path`` (its ``element``, if named) into an InputError; replay the warnings of a readable file."""
    with warnings.catch_warnings(record=True) as caught:  # a damaged file warns on its way to failing
        warnings.simplefilter("always")
        try:
            yield
        except InputError:
            raise
        except Exception as err:  # anndata, h5py and zarr raise many types for damaged files
            cut = _TRUNCATED.search(str(err))
            if cut:
                raise InputError(
                    f"input {str(path)!r} is truncated: it holds {int(cut[1])} of its {int(cut[2])} bytes; copy it again "
                    "from its source (an interrupted copy or download), sccr read nothing from it"
                ) from err
            if element is not None:
                raise InputError(
                    f"cannot read {element!r} of {str(path)!r} ({type(err).__name__}: {err}); the file may be truncated "
                    "or corrupt: copy it again from its source"
                ) from err
            raise InputError(
                f"cannot read {str(path)!r} as AnnData ({type(err).__name__}: {err}); the file may be truncated or corrupt"
            ) from err
    for w in caught:  # the file was readable: its warnings are worth showing
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _stored_chunks(array) -> tuple[int, int]:
    """``(stored, expected)`` chunks (shards, for a sharded array) of a zarr array."""
    if getattr(array, "shards", None) is not None and hasattr(array, "_nshards_initialized"):
        return int(array._nshards_initialized), int(array._nshards)
    return int(array.nchunks_initialized), int(array.nchunks)


def check_zarr_complete(f, path: Path, keys: tuple[str, ...]) -> None:
    """Refuse a zarr store some of whose chunks are missing in the parts of a sparse matrix or in an index (``keys``).

    zarr reads a missing chunk as zeros without a word; for these parts no chunk can
    hold only zeros, so a missing one means an incomplete copy. (A dense matrix may
    lack its all-zero chunks, which zarr does not store: that cannot be told apart.)
    """
    if not isinstance(f, zarr.Group):
        return
    for key in keys:
        if key not in f:
            continue
        element = f[key]
        if _is_group(element):
            if element.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix"):
                parts = [(f"{key}/{part}", element[part]) for part in ("data", "indices", "indptr") if part in element]
            elif "_index" in element.attrs and element.attrs["_index"] in element:
                parts = [(f"{key}/{element.attrs['_index']}", element[element.attrs["_index"]])]
            else:
                continue
        else:
            continue
        for name, array in parts:
            if array.size == 0:
                continue
            stored, expected = _stored_chunks(array)
            if stored < expected:
                raise InputError(
                    f"zarr store {str(path)!r} is missing {expected - stored} of the {expected} chunks of {name!r}; "
                    "copy the store again from its source (an interrupted copy or download), sccr read nothing from it"
                )


def read_anndata(path: str | os.PathLike) -> ad.AnnData:
    """Read an .h5ad file or a .zarr store fully into memory, with an error that names the problem."""
    path = Path(path)
    kind = _format_of_input(path)
    with _readable(path):
        if kind == "zarr":
            with _open(path, kind, "r") as f:
                layers = tuple(f"layers/{name}" for name in f["layers"].keys()) if "layers" in f else ()
                check_zarr_complete(f, path, ("obs", "var", "X", *layers))
            return ad.read_zarr(path)
        return ad.read_h5ad(path)


@contextmanager
def _open(path: Path, kind: str, mode: str):
    """The root group of an .h5ad file (h5py) or a .zarr store (zarr), closed at the end."""
    if kind == "zarr":
        if mode == "r":
            yield zarr.open_group(path, mode="r")
        else:  # edited through the group itself; its consolidated metadata is rewritten afterwards, as anndata does
            yield zarr.open_group(path, mode=mode, use_consolidated=False)
            zarr.consolidate_metadata(path)
    else:
        with h5py.File(path, mode) as f:
            yield f


def _is_group(element) -> bool:
    return isinstance(element, (h5py.Group, zarr.Group))


def _index(group) -> pd.Index:
    """The index (obs or var names) of a dataframe element, without reading its columns."""
    return pd.Index(read_elem(group[group.attrs["_index"]]))


def _rows_per_block(row_bytes: int) -> int:
    return max(1, READ_BLOCK_BYTES // max(row_bytes, 1))


class StoredMatrix(StoredInput):
    """``X`` or a layer of an open .h5ad file or .zarr store, read whole or block by block.

    Dense and CSR matrices are read in blocks of rows, CSC matrices in blocks of
    columns (``width`` columns, or a multiple of it); values come out as float32.
    """

    def __init__(self, element, key: str, path: Path) -> None:
        self.key, self.path = key, path
        if _is_group(element):
            encoding = element.attrs.get("encoding-type")
            if encoding not in ("csr_matrix", "csc_matrix"):
                raise InputError(
                    f"{key} is stored as {encoding!r}, not as a matrix; pass a layer holding a dense or sparse matrix"
                )
            self._sparse = sparse_dataset(element)
            self.format = self._sparse.format
            self.nnz = int(element["data"].shape[0])
            dtype = element["data"].dtype
        else:
            self._sparse = None
            self.format, self.nnz, dtype = "dense", None, element.dtype
        self._element = element
        self.shape = tuple(int(s) for s in element.attrs["shape"]) if self._sparse is not None else tuple(element.shape)
        check_dtype(np.dtype(dtype))
        check_shape(self.shape, "expression matrix")

    def read(self) -> np.ndarray | sp.spmatrix:
        """The whole matrix (a dense one is filled block by block into one float32 array)."""
        if self._sparse is not None:
            with _readable(self.path, self.key):
                return read_elem(self._element)
        out = np.empty(self.shape, dtype=np.float32)
        for row, _, block in self.blocks():
            out[row : row + block.shape[0]] = block
        return out

    def blocks(self, width: int = PANEL_WIDTH) -> Iterator[tuple[int, int, np.ndarray | sp.spmatrix]]:
        """``(row, column, block)`` of float32 blocks covering the matrix in order (sparse blocks stay sparse)."""
        n, g = self.shape
        if self.format == "csc":
            step = width * _rows_per_block(4 * n * width)
            for col in range(0, g, step):
                with _readable(self.path, self.key):
                    block = sp.csc_matrix(self._sparse[:, col : col + step], dtype=np.float32)
                yield 0, col, block
            return
        step = _rows_per_block(4 * g)
        for row in range(0, n, step):
            with _readable(self.path, self.key):
                if self._sparse is not None:
                    block = sp.csr_matrix(self._sparse[row : row + step], dtype=np.float32)
                else:
                    block = np.asarray(self._element[row : row + step], dtype=np.float32)
            yield row, 0, block


@contextmanager
def open_matrix(path: str | os.PathLike, layer: str | None) -> Iterator[tuple[StoredMatrix, pd.Index, pd.Index]]:
    """``X`` (or ``layers[layer]``) of an .h5ad file or .zarr store, unread, with its cell and gene names.

    The file stays open (read-only) inside the block; nothing else of it is read.
    """
    path = Path(path)
    kind = _format_of_input(path)
    with ExitStack() as stack:
        with _readable(path):  # only errors of reading this file, not of what the caller does with it
            f = stack.enter_context(_open(path, kind, "r"))
            stored, names = _matrix_and_names(f, path, layer)
        yield stored, *names


def _matrix_and_names(f, path: Path, layer: str | None) -> tuple[StoredMatrix, tuple[pd.Index, pd.Index]]:
    if "obs" not in f or "var" not in f:
        raise InputError(
            f"cannot read {str(path)!r} as AnnData: it has no obs/var; pass an .h5ad file or .zarr store written by anndata"
        )
    key = "X" if layer is None else f"layers/{layer}"
    if key not in f:
        if layer is None:
            raise InputError(f"{str(path)!r} has no X; pass --layer naming the layer to impute")
        known = ", ".join(map(repr, f["layers"].keys())) if "layers" in f else "none"
        raise InputError(
            f"layer {layer!r} not found in {str(path)!r} (available: {known}); pass one of them or omit --layer for X"
        )
    check_zarr_complete(f, path, ("obs", "var", key))
    return StoredMatrix(f[key], key, path), (_index(f["obs"]), _index(f["var"]))


def output_format(output: Path) -> str:
    """``"zarr"`` for a path ending in ``.zarr``, else ``"h5ad"``."""
    return "zarr" if output.suffix == ".zarr" else "h5ad"


def check_output_path(
    output: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (), force: bool = False
) -> Path:
    """Refuse an output that would overwrite an input, an existing file (unless ``force``) or sits in a missing folder."""
    output = Path(output)
    for source in map(Path, inputs):
        same = source.resolve() == output.resolve() or (
            source.exists() and output.exists() and os.path.samefile(source, output)
        )
        if same:
            raise InputError(
                f"output {str(output)!r} is the input file; choose another output path (the input is never modified)"
            )
    zarr_output = output_format(output) == "zarr"
    if output.is_dir() and not (zarr_output and is_zarr(output)):
        raise InputError(
            f"output {str(output)!r} is a folder; pass a file path such as {str(output / 'imputed.h5ad')!r} (or a .zarr store)"
        )
    if zarr_output and output.exists() and not output.is_dir():
        raise InputError(f"output {str(output)!r} is a file, not a zarr store; choose another output path")
    if output.suffix not in (".h5ad", ".zarr"):
        raise InputError(
            f"output {str(output)!r} must end in .h5ad (an AnnData file) or .zarr (a zarr store); "
            f"sccr writes only these formats, e.g. {str(output.with_suffix('.h5ad'))!r}"
        )
    if output.exists() and not force:
        raise InputError(f"output {str(output)!r} already exists; choose another path or pass --force to replace it")
    folder = output.resolve().parent
    if not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable; choose another output path")
    return output


def _busy_output(output: Path):
    def error(owner: Owner | None) -> InputError:
        lock = lock_path(output)
        if owner is not None and not owner.here:
            return InputError(
                f"output {str(output)!r} is locked by sccr run {owner.describe()} (lock file {str(lock)!r}); sccr cannot "
                "tell from here whether it still runs: if it has ended, delete the lock file"
            )
        who = "another sccr run" if owner is None else f"sccr run {owner.describe()}"
        return InputError(
            f"output {str(output)!r} is being written by {who}; wait for it to finish or choose another output path"
        )

    return error


@contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[Owner | None]:
    """Hold the lock ``.OUTPUT.sccr-lock`` while ``output`` is written: a second run writing it is refused at its start.

    Yields the owner of a lock left by a run that is gone (taken over), or ``None``.
    """
    output = Path(output)
    with claim(lock_path(output.resolve().parent / output.name), _busy_output(output)) as lock:
        yield lock.previous


def sweep_notes(folder: str | os.PathLike) -> list[str]:
    """Remove what killed sccr runs left in ``folder`` (temporary outputs, scratch folders); one line for each, and for those of other hosts."""
    return [item.describe() for item in sweep(folder) if item.outcome in ("removed", "restored", ELSEWHERE)]


def added_bytes(shape: tuple[int, int], k: int, k_gene: int) -> int:
    """About the bytes sccr adds to an output file: the imputed float32 layer, the cell and gene graphs, HDF5's indexes."""
    n, g = shape
    graphs = 2 * 12 * n * (2 * k + 2) + 3 * 12 * g * (2 * k_gene + 2)
    return int(1.01 * (4 * n * g + graphs)) + (1 << 20)


def output_bytes(source: Path | None, shape: tuple[int, int], k: int, k_gene: int) -> int:
    """About the bytes of an output file: the copied input (if any) and what sccr adds."""
    return (0 if source is None else size_of(source)) + added_bytes(shape, k, k_gene)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(output: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in the output's folder (a file, or a folder for .zarr), renamed to ``output`` when the block succeeds.

    An interrupted or failed write leaves no partial output behind; an existing
    ``output`` is replaced only once the new one is complete.
    """
    output = Path(output)
    folder = output.resolve().parent
    if output_format(output) == "zarr":
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp.zarr", dir=folder))
        tmp.rmdir()  # a unique name; the writer creates the store itself, with the usual permissions
    else:
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.h5ad", dir=folder)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        if tmp.is_dir() and output.is_dir():  # a folder cannot replace a non-empty one in one step
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=folder))
            os.replace(output, old / output.name)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except BaseException:
        _remove(tmp)
        raise


def reserve_space(path: Path, n_bytes: int) -> None:
    """Allocate ``n_bytes`` more disk space at the end of file ``path``, so that a full disk shows here, not inside HDF5.

    HDF5 writes its new objects into the space (and cuts the file to what it used
    when it closes it); a disk that fills up under HDF5 itself leaves its library
    in a state that can crash the process. File systems without ``fallocate`` are
    left as they are.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size + n_bytes)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def write_anndata(adata: ad.AnnData, path: Path, kind: str) -> None:
    """Write an in-memory AnnData as an .h5ad file or a .zarr store (``kind``)."""
    if kind == "zarr":
        adata.write_zarr(path)
    else:
        adata.write_h5ad(path)


@contextmanager
def open_for_update(path: Path, kind: str):
    """The root group of an AnnData file or store, open for writing."""
    with _open(path, kind, "r+") as f:
        yield f


def copy_anndata(source: Path, target: Path, kind: str) -> None:
    """Copy an AnnData file or store to ``target`` in format ``kind``, matrices in blocks (never whole in memory)."""
    source_kind = _format_of_input(source)
    if source_kind == kind:
        if kind == "zarr":
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return
    with _readable(source), _open(source, source_kind, "r") as src, _open_new(target, kind) as dst:
        dst.attrs.update({name: _plain(value) for name, value in src.attrs.items()})
        for key in src.keys():
            _copy_element(src, dst, key)


@contextmanager
def _open_new(path: Path, kind: str):
    if kind == "zarr":
        yield zarr.open_group(path, mode="w", zarr_format=ad.settings.zarr_write_format)
        zarr.consolidate_metadata(path)
    else:
        with h5py.File(path, "w") as f:
            yield f


def _plain(value):
    """An attribute value both h5py and zarr (JSON) accept."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _copy_element(src, dst, key: str) -> None:
    """Copy ``src[key]`` into ``dst``: mappings entry by entry, numeric arrays and sparse parts in blocks, the rest through anndata."""
    element = src[key]
    encoding = element.attrs.get("encoding-type")
    if encoding == "dict":
        write_elem(dst, key, {})
        for child in element.keys():
            _copy_element(element, dst[key], child)
    elif encoding in ("csr_matrix", "csc_matrix"):
        group = dst.create_group(key)
        group.attrs.update({name: _plain(value) for name, value in element.attrs.items()})
        for part in element.keys():
            _copy_array(element[part], group, part)
    elif encoding == "array" and np.issubdtype(element.dtype, np.number):
        _copy_array(element, dst, key)
    else:
        write_elem(dst, key, read_elem(element))


def _new_array(group, name: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...]):
    """An empty array ``group[name]`` (h5py dataset or zarr array) of ``chunks``."""
    chunks = tuple(max(1, min(c, s)) for c, s in zip(chunks, shape, strict=True))
    if isinstance(group, zarr.Group):
        return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks)
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if all(shape) else None)


def _copy_array(array, dst, name: str) -> None:
    shape = tuple(array.shape)
    row_bytes = array.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    step = _rows_per_block(row_bytes)
    copy = _new_array(dst, name, shape, array.dtype, (min(step, 1 << 16), *shape[1:]))
    copy.attrs.update({key: _plain(value) for key, value in array.attrs.items()})
    for start in range(0, shape[0] if shape else 0, step):
        copy[start : start + step] = array[start : start + step]
    if not shape:
        copy[()] = array[()]


def _group(parent, name: str):
    """``parent[name]``, created as an (empty) AnnData mapping if missing."""
    if name not in parent:
        write_elem(parent, name, {})
    return parent[name]


def create_layer(f, key: str, shape: tuple[int, int]):
    """An empty dense float32 layer ``layers[key]`` in an open .h5ad file or zarr store, replacing one of that name.

    Its chunks are ``ROW_BLOCK`` cells by ``PANEL_WIDTH`` genes, so the pipeline writes it panel by panel.
    """
    layers = _group(f, "layers")
    if key in layers:
        del layers[key]
    dataset = _new_array(layers, key, shape, "float32", (ROW_BLOCK, PANEL_WIDTH))
    dataset.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    return dataset


def write_element(f, where: str, key: str, value) -> None:
    """Write ``value`` as ``where/key`` of an open .h5ad file or zarr store (anndata's encoding), replacing one of that name."""
    group = _group(f, where)
    if key in group:
        del group[key]
    write_elem(group, key, value)


def read_column(path: str | os.PathLike, axis: str, name: str) -> np.ndarray | None:
    """Column ``name`` of ``obs`` or ``var`` (``axis``) of an .h5ad file or .zarr store, or ``None`` if there is none."""
    path = Path(path)
    kind = _format_of_input(path)
    with _readable(path), _open(path, kind, "r") as f:
        frame = f[axis]
        if name not in frame or name == frame.attrs.get("_index"):
            return None
        return np.asarray(read_elem(frame[name]))


def add_column(f, axis: str, name: str, values: np.ndarray) -> None:
    """Add (or replace) column ``name`` of the ``obs``/``var`` dataframe of an open .h5ad file or zarr store."""
    frame = f[axis]
    if name in frame:
        del frame[name]
    write_elem(frame, name, values)
    order = [str(c) for c in np.atleast_1d(frame.attrs.get("column-order", [])) if str(c) != name]
    frame.attrs["column-order"] = order + [name]
