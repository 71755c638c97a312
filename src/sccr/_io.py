"""Reading and writing .h5ad files safely: clear errors in, atomic writes out."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import h5py

from ._validation import InputError


def read_h5ad(path: str | os.PathLike) -> ad.AnnData:
    """Read an .h5ad file fully into memory, with an error that names the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"input {str(path)!r} is a folder; pass an .h5ad file")
    if not h5py.is_hdf5(path):
        raise InputError(f"input {str(path)!r} is not an HDF5/.h5ad file; convert it with anndata (e.g. sc.read_10x_mtx(...).write_h5ad(...))")
    with warnings.catch_warnings(record=True) as caught:  # a damaged file warns on its way to failing
        warnings.simplefilter("always")
        try:
            adata = ad.read_h5ad(path)
        except Exception as err:  # anndata raises many types for damaged files
            raise InputError(f"cannot read {str(path)!r} as AnnData ({type(err).__name__}: {err}); the file may be truncated or corrupt") from err
    for w in caught:  # the file was readable: its warnings are worth showing
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return adata


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


def write_h5ad_atomic(adata: ad.AnnData, output: str | os.PathLike) -> None:
    """Write to a temporary file in the output's folder, then rename it into place.

    An interrupted or failed write leaves no partial file behind.
    """
    output = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.h5ad", dir=output.resolve().parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
