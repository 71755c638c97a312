"""Checkpoints: each finished stage's result kept in a folder, so that a rerun resumes after the last one.

A checkpoint folder holds, for one input and one set of options (its
*fingerprint*: the input matrix's values streamed through a hash in blocks of rows,
its shape, the options that change numbers, the package versions and the engine's
code), the state the stages after the last finished one need: cell and gene graphs,
column statistics, and the intermediate N x G matrices. A stage is committed
atomically: its new files are written as ``*.part``, flushed and renamed, then the
manifest ``sccr-checkpoint.json`` is replaced in one step; files the new manifest no
longer names are deleted. A kill at any point leaves the previous stage's checkpoint
whole; what a killed save had half written is deleted by the next run. The folder's
lock ``.sccr-lock`` keeps two runs from using one checkpoint at once.

A resumed run gives bitwise the output of an uninterrupted one: every state is
stored exactly (float32 matrices as they are, graphs with their entries in stored
order), and the stages are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._errors import InputError
from .._options import Options
from .._versions import versions
from .checks import canonical
from .files import CHECKPOINT_LOCK, CHECKPOINT_PREFIX, Claim, Owner, claim, interrupts_deferred, no_space_named, remove
from .matrix import PANEL_WIDTH, ROW_BLOCK, DenseMatrix, Matrix, PanelFile, Workspace, _pwrite_from, as_matrix

#: Version of the folder's layout; a checkpoint of another layout is discarded.
FORMAT = 1
MANIFEST = "sccr-checkpoint.json"
LOCK = CHECKPOINT_LOCK
#: Every file of a checkpoint starts so (and only those are ever deleted from its folder).
PREFIX = CHECKPOINT_PREFIX
PART = ".part"
#: Options that change no number (left out of the fingerprint).
NEUTRAL_OPTIONS = ("n_jobs", "progress", "backend", "client", "scratch_dir", "memory_budget")


def _engine_code() -> str:
    """A digest of the engine's source files: a checkpoint is valid only for the code that made it."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def describe(shape: tuple[int, int], options: Options) -> dict:
    """What a checkpoint is for, besides the input's values: shape, options that change numbers, versions, code."""
    record = {name: value for name, value in options.record().items() if name not in NEUTRAL_OPTIONS}
    return {"format": FORMAT, "shape": list(shape), "options": record, "versions": versions(), "engine": _engine_code()}


def fingerprint(X, options: Options) -> str:
    """Hash of the input's values (in canonical CSR form, so that a dense and a sparse copy agree) and of :func:`describe`."""
    X = as_matrix(X)
    digest = hashlib.blake2b(digest_size=32)
    digest.update(json.dumps(describe(X.shape, options), sort_keys=True, default=str).encode())
    for _, block in X.row_blocks(ROW_BLOCK):
        block = canonical(block) if sp.issparse(block) else sp.csr_matrix(block)
        block.sort_indices()
        digest.update(np.asarray(block.indptr - block.indptr[0], dtype=np.int64).tobytes())
        digest.update(np.asarray(block.indices, dtype=np.int64).tobytes())
        digest.update(np.asarray(block.data, dtype=np.float32).tobytes())
    return digest.hexdigest()


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a checkpoint folder: an existing writable folder, or one that can be made."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"checkpoint folder {str(folder)!r} is a file; pass a folder (it is created if missing)")
    parent = folder if folder.is_dir() else folder.resolve().parent
    if not parent.is_dir():
        raise InputError(f"checkpoint folder's parent {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"checkpoint folder {str(parent)!r} is not writable; pass another folder")
    return folder


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _busy(folder: Path):
    def error(owner: Owner | None) -> InputError:
        if owner is not None and not owner.here:
            return InputError(
                f"checkpoint folder {str(folder)!r} is locked by sccr run {owner.describe()}; sccr cannot tell from "
                f"here whether it still runs: if it has ended, delete {str(folder / LOCK)!r}"
            )
        who = "another sccr run" if owner is None else f"sccr run {owner.describe()}"
        return InputError(
            f"checkpoint folder {str(folder)!r} is in use by {who}; wait for it to finish or pass another --checkpoint folder"
        )

    return error


class Checkpoint:
    """The checkpoint folder of one run (locked by it while open).

    Attributes
    ----------
    stage
        The last finished stage kept here (``None``: none, the run starts from the first).
    notes
        What opening it found: a checkpoint resumed, or discarded, and why.
    """

    def __init__(self, folder: Path, *, created: bool, lock: Claim) -> None:
        self.folder = folder
        self._created, self._lock = created, lock
        self.fingerprint: str | None = None
        self.stages: list[str] = []
        self.notes: list[str] = []
        self.manifest: dict = {}
        self.stage: str | None = None
        #: Bytes the stage states may take at once (named when the disk fills up).
        self.needed: int | None = None
        if lock.previous is not None:
            self.notes.append(
                f"took over checkpoint folder {str(folder)!r} from sccr run {lock.previous.describe()}, which has ended"
            )

    @classmethod
    def lock(cls, folder: str | os.PathLike) -> Checkpoint:
        """Lock ``folder`` (made if missing) for this run; :meth:`attach` then reads what it holds."""
        folder = check_folder(folder)
        created = not folder.exists()
        folder.mkdir(exist_ok=True)
        try:
            return cls(folder, created=created, lock=claim(folder / LOCK, _busy(folder)))
        except BaseException:
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def held_bytes(self) -> int:
        """Bytes the checkpoint in the folder takes now (whatever it was made for)."""
        try:
            items = json.loads((self.folder / MANIFEST).read_text()).get("items", {})
            return sum(int(item["bytes"]) for item in items.values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0

    def attach(self, fingerprint: str, stages: list[str]) -> None:
        """Keep the folder's checkpoint if it was made for ``fingerprint`` (the run's stages are ``stages``), else discard it."""
        self.fingerprint, self.stages = fingerprint, stages
        manifest = None
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            self.notes.append(
                f"checkpoint in {str(self.folder)!r} is unreadable: discarded, starting from the first stage"
            )
        if isinstance(manifest, dict) and manifest.get("made_folder"):
            self._created = True  # sccr made the folder: it goes with the checkpoint, whatever happens to this one
        if manifest is not None:
            if manifest.get("fingerprint") != self.fingerprint or manifest.get("stage") not in self.stages:
                self.notes.append(
                    f"checkpoint in {str(self.folder)!r} was made for another input, other options or another "
                    "version of sccr: discarded, starting from the first stage"
                )
                manifest = None
            elif not self._complete(manifest):
                self.notes.append(
                    f"checkpoint in {str(self.folder)!r} is missing files: discarded, starting from the first stage"
                )
                manifest = None
        self.manifest = manifest or {}
        self.stage = None if manifest is None else manifest["stage"]
        self._remove_unlisted()
        if self.stage is not None:
            done = self.stages.index(self.stage) + 1
            self.notes.append(
                f"resuming from the checkpoint in {str(self.folder)!r}: {done} of {len(self.stages)} stages done "
                f"(last: {self.stage})"
            )

    def _complete(self, manifest: dict) -> bool:
        for item in manifest.get("items", {}).values():
            path = self.folder / item["file"]
            if not path.is_file() or path.stat().st_size != item["bytes"]:
                return False
        return True

    def _listed(self) -> set[str]:
        return {item["file"] for item in self.manifest.get("items", {}).values()} | (
            {MANIFEST} if self.manifest else set()
        )

    def _remove_unlisted(self) -> None:
        """Delete sccr's files the manifest does not name (parts of a killed save, a discarded checkpoint)."""
        listed = self._listed()
        for path in self.folder.iterdir():
            if path.name.startswith(PREFIX) and path.name not in listed:
                remove(path)

    # --- the stage state ---------------------------------------------------------------------

    def load(self, workspace: Workspace) -> dict:
        """The state kept after :attr:`stage`: matrices as scratch-like files (out of core) or arrays, adopted by ``workspace``."""
        state = {}
        for name, item in self.manifest["items"].items():
            path = self.folder / item["file"]
            kind = item["kind"]
            if kind == "matrix":
                store = PanelFile(path, tuple(item["shape"]), item["width"], readonly=True)
                if not workspace.out_of_core:
                    array = store.to_array()
                    store.close()
                    store = DenseMatrix(array)
                state[name] = workspace.adopt(store)
            elif kind == "sparse":
                with interrupts_deferred():
                    state[name] = sp.load_npz(path).tocsr()
            else:
                state[name] = np.load(path, allow_pickle=False)
        return state

    def save(self, stage: str, state: dict, timings: dict, work: dict) -> None:
        """Commit ``state``, what the stages after ``stage`` need, as the checkpoint of ``stage``."""
        with no_space_named(self.folder, "the checkpoint (its finished stages are kept)", self.needed):
            self._save(stage, state, timings, work)

    def _save(self, stage: str, state: dict, timings: dict, work: dict) -> None:
        old_items = self.manifest.get("items", {})
        items = {}
        for name, value in state.items():
            if name in old_items:  # a stage's result never changes: written once, named again
                items[name] = old_items[name]
                continue
            items[name] = self._write(name, value)
        manifest = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "stage": stage,
            "items": items,
            "timings": timings,
            "work": work,
            "owner": json.loads(Owner.me().to_json()),
            "made_folder": self._created or bool(self.manifest.get("made_folder")),
        }
        part = self.folder / (MANIFEST + PART)
        try:
            with interrupts_deferred(), open(part, "w") as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, self.folder / MANIFEST)
        finally:
            part.unlink(missing_ok=True)
        _fsync_folder(self.folder)
        self.manifest, self.stage = manifest, stage
        self._remove_unlisted()

    def _write(self, name: str, value) -> dict:
        if isinstance(value, Matrix):
            kind, suffix = "matrix", ".f32"
        elif sp.issparse(value):
            kind, suffix = "sparse", ".npz"
        else:
            kind, suffix = "array", ".npy"
        target = self.folder / f"{PREFIX}-{name}{suffix}"
        part = target.with_name(target.name + PART)
        try:
            if kind == "matrix":
                item = {"shape": list(value.shape), "width": PANEL_WIDTH}
                _write_panels(value, part)
            else:
                item = {}
                with interrupts_deferred(), open(part, "wb") as f:
                    if kind == "sparse":
                        sp.save_npz(f, sp.csr_matrix(value), compressed=False)
                    else:
                        np.save(f, np.asarray(value), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return {"file": target.name, "kind": kind, "bytes": target.stat().st_size, **item}

    # --- end --------------------------------------------------------------------------------

    def finish(self) -> None:
        """The run's output is complete: delete the checkpoint (and the folder, if sccr made it and it is empty now)."""
        made = self._created or bool(self.manifest.get("made_folder"))
        self.manifest = {}
        self._remove_unlisted()
        self.close()
        if made:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def close(self) -> None:
        """Let go of the folder, keeping the checkpoint for a rerun.

        A folder this run made and never committed a stage to goes, with what a stopped
        first save had written (a rerun could not resume from it, nor tell it was sccr's).
        """
        if self._created and not self.manifest:
            self._remove_unlisted()
        self._lock.release()
        if self._created and not self.manifest:
            try:
                self.folder.rmdir()
            except OSError:  # something that is not sccr's is in it
                pass


def _write_panels(M: Matrix, path: Path) -> None:
    """``M`` as a file of column panels of :data:`PANEL_WIDTH` (the layout of :class:`PanelFile`), flushed to disk."""
    if isinstance(M, PanelFile) and M.width == PANEL_WIDTH:
        shutil.copyfile(M.path, path)  # the same layout: copied by the kernel
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        return
    n, g = M.shape
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for start in range(0, g, PANEL_WIDTH):
            _pwrite_from(fd, M.columns(start, start + PANEL_WIDTH), 4 * n * start)
        os.fsync(fd)
    finally:
        os.close(fd)


def stage_matrices(keeps: Iterable[tuple[str, ...]], matrices: set[str]) -> int:
    """The most N x G matrices a checkpoint holds at once, over stages whose kept states are ``keeps``, in order."""
    most, previous = 0, set()
    for keep in keeps:
        now = set(keep) & matrices
        most = max(most, len(now | previous))
        previous = now
    return most
