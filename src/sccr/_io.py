"""Reading and writing .h5ad files safely: clear errors in, atomic writes out."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import pandas as pd
from anndata.io import read_elem, write_elem

from . import _memory
from ._validation import InputError


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"input {str(path)!r} is a folder; pass an .h5ad file")
    if not h5py.is_hdf5(path):
        raise InputError(f"input {str(path)!r} is not an HDF5/.h5ad file; convert it with anndata (e.g. sc.read_10x_mtx(...).write_h5ad(...))")


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn any failure to decode ``path`` into an InputError; replay the warnings of a readable file."""
    with warnings.catch_warnings(record=True) as caught:  # a damaged file warns on its way to failing
        warnings.simplefilter("always")
        try:
            yield
        except InputError:
            raise
        except Exception as err:  # anndata and h5py raise many types for damaged files
            raise InputError(f"cannot read {str(path)!r} as AnnData ({type(err).__name__}: {err}); the file may be truncated or corrupt") from err
    for w in caught:  # the file was readable: its warnings are worth showing
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def read_h5ad(path: str | os.PathLike) -> ad.AnnData:
    """Read an .h5ad file fully into memory, with an error that names the problem."""
    path = Path(path)
    _check_input_file(path)
    with _readable(path):
        return ad.read_h5ad(path)


def _index(group: h5py.Group) -> pd.Index:
    """The index (obs or var names) of a dataframe element, without reading its columns."""
    return pd.Index(read_elem(group[group.attrs["_index"]]))


def read_matrix(path: str | os.PathLike, layer: str | None) -> tuple[Any, pd.Index, pd.Index]:
    """``X`` (or ``layers[layer]``) of an .h5ad file with its cell and gene names; nothing else is read.

    Refuses, before reading it, a matrix whose stored values alone exceed the
    memory available.
    """
    path = Path(path)
    _check_input_file(path)
    with _readable(path), h5py.File(path, "r") as f:
        if "obs" not in f or "var" not in f:
            raise InputError(f"cannot read {str(path)!r} as AnnData: it is HDF5 but has no obs/var; pass an .h5ad file written by anndata")
        key = "X" if layer is None else f"layers/{layer}"
        if key not in f:
            if layer is None:
                raise InputError(f"{str(path)!r} has no X; pass --layer naming the layer to impute")
            known = ", ".join(map(repr, f["layers"].keys())) if "layers" in f else "none"
            raise InputError(f"layer {layer!r} not found in {str(path)!r} (available: {known}); pass one of them or omit --layer for X")
        element = f[key]
        stored = sum(part.nbytes for part in element.values()) if isinstance(element, h5py.Group) else element.nbytes
        available = _memory.available_bytes()
        if available is not None and stored > available:
            raise InputError(
                f"{key} of {str(path)!r} takes {stored / 1024**3:.1f} GiB as stored but {available / 1024**3:.1f} GiB "
                "of memory is available; select genes or cells first, or run on a machine with more memory"
            )
        return read_elem(element), _index(f["obs"]), _index(f["var"])
def check_output_path(output: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (), force: bool = False) -> Path:
    """Refuse an output that would overwrite an input, an existing file (unless ``force``) or sits in a missing folder."""
    output = Path(output)
    for source in map(Path, inputs):
        same = source.resolve() == output.resolve() or (
            source.exists() and output.exists() and os.path.samefile(source, output)
        )
        if same:
            raise InputError(f"output {str(output)!r} is the input file; choose another output path (the input is never modified)")
    if output.is_dir():
        raise InputError(f"output {str(output)!r} is a folder; pass a file path such as {str(output / 'imputed.h5ad')!r}")
    if output.exists() and not force:
        raise InputError(f"output {str(output)!r} already exists; choose another path or pass --force to replace it")
    folder = output.resolve().parent
    if not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable; choose another output path")
    return output


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(output: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in the output's folder, renamed to ``output`` when the block succeeds.

    An interrupted or failed write leaves no partial file behind.
    """
    output = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.h5ad", dir=output.resolve().parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_h5ad_atomic(adata: ad.AnnData, output: str | os.PathLike) -> None:
    """Write ``adata`` to ``output`` through :func:`atomic_output`."""
    with atomic_output(output) as tmp:
        adata.write_h5ad(tmp)


def _group(parent: h5py.Group, name: str) -> h5py.Group:
    """``parent[name]``, created as an (empty) AnnData mapping if missing."""
    if name not in parent:
        write_elem(parent, name, {})
    return parent[name]


#: Rows per chunk of the imputed layer in the output file (chunks are 64 genes wide).
LAYER_CHUNK_ROWS = 4096


def create_layer(f: h5py.File, key: str, shape: tuple[int, int], width: int) -> h5py.Dataset:
    """An empty dense float32 layer ``layers[key]`` in an open .h5ad file, replacing one of that name.

    Its chunks are ``width`` genes wide, so the pipeline writes it panel by panel.
    """
    layers = _group(f, "layers")
    if key in layers:
        del layers[key]
    chunks = (min(shape[0], LAYER_CHUNK_ROWS), min(shape[1], width))
    dataset = layers.create_dataset(key, shape=shape, dtype="float32", chunks=chunks)
    dataset.attrs["encoding-type"] = "array"
    dataset.attrs["encoding-version"] = "0.2.0"
    return dataset


def write_element(f: h5py.File, where: str, key: str, value) -> None:
    """Write ``value`` as ``where/key`` of an open .h5ad file (anndata's encoding), replacing one of that name."""
    group = _group(f, where)
    if key in group:
        del group[key]
    write_elem(group, key, value)
