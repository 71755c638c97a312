"""Files a run owns: owner markers and locks, the sweep of stale leftovers, free space, full disks.

Every file or folder a run leaves beside its output or in a scratch folder while it
works carries its owner (process id and host) in a small marker that the owning
process holds locked (``fcntl.flock``) for as long as it lives:

- the temporary output ``.OUTPUT.<random>.tmp.h5ad`` (or ``.tmp.zarr``, and the
  ``.OUTPUT.<random>.old`` folder of a replaced zarr store) belongs to the lock
  ``.OUTPUT.sccr-lock`` beside it, taken before the temporary output is made and
  given back after it is renamed: the lock also keeps two runs from writing one
  OUTPUT at once (:func:`claim`);
- a scratch folder ``sccr-scratch-<random>`` holds its marker ``.sccr-owner``;
- a checkpoint folder holds its lock ``.sccr-lock``.

An owner on this host is alive while its process exists (``os.kill(pid, 0)``)
and still holds the marker's lock; the lock guards against a reused process id.
:func:`sweep` removes what belongs to owners that are gone and names what it
removed; what belongs to a live run, or to a run on another host (sccr cannot see
its processes), is left alone and named, and so is what has no marker at all (left
by an older sccr, whose runs may still be going).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .._errors import InputError
from .._options import format_size

log = logging.getLogger("sccr")

HOST = socket.gethostname()
#: Name of the owner marker inside a scratch folder.
OWNER_MARKER = ".sccr-owner"
#: Prefix of the scratch folders (``tempfile.mkdtemp``).
SCRATCH_PREFIX = "sccr-scratch-"
#: The lock of a checkpoint folder, and the start of every file of a checkpoint (:mod:`.checkpoint`).
CHECKPOINT_LOCK, CHECKPOINT_PREFIX = ".sccr-lock", "sccr-checkpoint"
#: A lock file without an owner written in it is judged stale only once it is this old (seconds):
#: a run writes its name a moment after making it, so a younger one may be being taken.
UNMARKED_GRACE_S = 60.0
#: How long :func:`claim` waits for a lock held only by a sweeper (its owner is gone).
CLAIM_PATIENCE_S = 5.0

_TEMP_OUTPUT = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.(?P<kind>tmp\.h5ad|tmp\.zarr|old)$")
_LOCK = re.compile(r"^\.(?P<name>.+)\.sccr-lock$")


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``.NAME.sccr-lock`` in its folder."""
    return output.parent / f".{output.name}.sccr-lock"


# --- owners -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """The process that made a marker: its id, its host and when it took the marker."""

    pid: int
    host: str
    since: float

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), HOST, time.time())

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "since": self.since, "program": "sccr"})

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), float(data.get("since", 0.0)))
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def here(self) -> bool:
        return self.host == HOST

    def describe(self) -> str:
        return f"pid {self.pid} on {'this host' if self.here else 'host ' + repr(self.host)}"


def read_owner(path: Path) -> Owner | None:
    """The owner written in marker ``path``, or ``None`` (missing, empty, unreadable)."""
    try:
        return Owner.parse(path.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts: its marker lock is free)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _locked_by_someone(path: Path) -> bool | None:
    """Whether another open file holds a lock on ``path``; ``None`` where locks are not supported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock support on this file system: go by the process id alone
        return None
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False


#: States of a marker: its owner runs, is gone, is on another host, or the marker says nothing (yet).
LIVE, GONE, ELSEWHERE, UNKNOWN = "live", "gone", "elsewhere", "unknown"
#: What :func:`sweep` calls a leftover without an owner marker (never removed).
UNMARKED = "unmarked"


def owner_state(marker: Path) -> tuple[str, Owner | None]:
    """``(state, owner)`` of a marker: :data:`LIVE`, :data:`GONE`, :data:`ELSEWHERE` or :data:`UNKNOWN` (no owner written)."""
    owner = read_owner(marker)
    if owner is not None and not owner.here:
        return ELSEWHERE, owner
    locked = _locked_by_someone(marker)
    if owner is None:
        return (LIVE if locked else UNKNOWN), None
    if not pid_exists(owner.pid):
        return GONE, owner
    if locked is False:  # the process id was reused: the owner let go of its lock when it ended
        return GONE, owner
    return LIVE, owner


class Claim:
    """A marker or lock file held by this process (locked until :meth:`release`)."""

    def __init__(self, path: Path, fd: int, previous: Owner | None) -> None:
        self.path, self._fd = path, fd
        #: The owner before this one, if the file was left by a run that is gone.
        self.previous = previous

    def release(self) -> None:
        """Remove the file (if it is still this claim's) and let go of the lock."""
        if self._fd < 0:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def mark(path: Path) -> Claim:
    """Write this process's owner marker at ``path`` (a new file) and hold it locked."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if isinstance(err, BlockingIOError):
                raise
            # no lock support on this file system: the process id alone marks the owner
        with no_space_named(path.parent, "an owner marker", None):
            os.write(fd, Owner.me().to_json().encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return Claim(path, fd, None)


def claim(path: Path, busy: Callable[[Owner | None], InputError]) -> Claim:
    """Take the lock file ``path`` for this process, or raise ``busy(owner)`` when a live run (or one elsewhere) holds it.

    A lock left by a run that is gone is taken over (``Claim.previous`` names that run).
    """
    deadline = time.monotonic() + CLAIM_PATIENCE_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flock_ok = True
        except BlockingIOError:
            os.close(fd)
            state, owner = owner_state(path)
            if (state == GONE or owner is None) and time.monotonic() < deadline:
                # held by a sweeper removing a gone run's files, or by a run writing its name in: wait
                time.sleep(0.05)
                continue
            raise busy(owner) from None
        except OSError:  # no lock support here: the process id alone decides
            flock_ok = False
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # removed by its last owner or a sweeper after we opened it: start again
            os.close(fd)
            continue
        previous = Owner.parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        alive = previous is not None and previous.pid != os.getpid() and previous.here and pid_exists(previous.pid)
        if previous is not None and (not previous.here or (not flock_ok and alive)):
            os.close(fd)
            raise busy(previous)
        lock = Claim(path, fd, previous)
        try:
            with no_space_named(path.parent, "the lock file", None):
                os.ftruncate(fd, 0)
                os.pwrite(fd, Owner.me().to_json().encode(), 0)
        except BaseException:
            lock.release()
            raise
        return lock


# --- leftovers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """A file or folder of a run found by :func:`sweep`, and what became of it."""

    path: Path
    kind: str
    #: ``"removed"``, ``"restored"`` (a replaced output put back), ``"live"``, ``"elsewhere"``, ``"unmarked"``,
    #: ``"recent"``, ``"stale"`` (would be removed: a dry run)
    outcome: str
    owner: Owner | None
    size: int

    def describe(self) -> str:
        whose = f"run {self.owner.describe()}" if self.owner is not None else "a run that left no owner marker"
        what = f"{self.kind}, {format_size(self.size)}"
        if self.outcome == "removed":
            return (
                f"removed stale {self.kind} {str(self.path)!r} ({format_size(self.size)}) of {whose}, which has ended"
            )
        if self.outcome == "stale":
            return f"would remove stale {self.kind} {str(self.path)!r} ({format_size(self.size)}) of {whose}, which has ended"
        if self.outcome == "restored":
            return f"put back {str(self.path)!r}, the output that {whose} was replacing when it ended"
        if self.outcome == "live":
            return f"kept {str(self.path)!r} ({what}): {whose} is still running"
        if self.outcome == "elsewhere":
            return f"kept {str(self.path)!r} ({what}) of {whose}: sccr cannot tell from here whether it still runs; delete it by hand once it has ended"
        if self.outcome == UNMARKED:
            return (
                f"kept {str(self.path)!r} ({what}): it has no owner marker (left by an sccr older than this one, or by a "
                "run of one still going); delete it by hand if no such run uses it"
            )
        return f"kept {str(self.path)!r} ({what}): too recent to judge"


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def remove(path: Path) -> None:
    """Remove a file or a folder tree; what is already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _mine(path: Path) -> bool:
    try:
        return not hasattr(os, "getuid") or path.lstat().st_uid == os.getuid()
    except OSError:
        return False


def _old_enough(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > UNMARKED_GRACE_S
    except OSError:
        return False


@contextmanager
def _holding(marker: Path) -> Iterator[bool]:
    """Hold ``marker``'s lock while a stale owner's files are removed (so that no run takes it meanwhile); yields whether it is held."""
    try:
        fd = os.open(marker, os.O_RDONLY)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # taken meanwhile: a live run now
            return
        except OSError:
            pass
        try:
            same = os.stat(marker).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = True  # removed meanwhile by someone else: nothing to hold
        yield same
    finally:
        os.close(fd)


def sweep(folder: str | os.PathLike, *, dry_run: bool = False) -> list[Leftover]:
    """Find what sccr runs left in ``folder`` (not in its subfolders); remove what belongs to runs that are gone.

    Looks at temporary outputs (with their locks), scratch folders, and the parts of
    a checkpoint's killed save, owned by this user (a checkpoint's finished stages are
    kept: they are what a rerun resumes from). Returns every one found, with what
    became of it; logs each removal.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    found: list[Leftover] = []
    outputs: dict[str, list[Path]] = {}
    for entry in entries:
        match = _TEMP_OUTPUT.match(entry.name) or _LOCK.match(entry.name)
        if match:
            outputs.setdefault(match["name"], []).append(entry)
        elif entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir() and _mine(entry):
            found.append(_sweep_owned(entry, entry / OWNER_MARKER, "scratch folder", [entry], dry_run))
    for name, paths in outputs.items():
        found.extend(_sweep_output(folder / name, [p for p in paths if _mine(p)], dry_run))
    parts = [e for e in entries if e.name.startswith(CHECKPOINT_PREFIX) and e.name.endswith(".part") and _mine(e)]
    if parts and (folder / CHECKPOINT_LOCK).exists():  # a checkpoint folder: what a killed save half wrote
        found.extend(_sweep_owned(p, folder / CHECKPOINT_LOCK, "checkpoint part", [p], dry_run) for p in parts)
    for item in found:
        if item.outcome in ("removed", "restored"):
            log.info(item.describe())
    return found


def _sweep_owned(shown: Path, marker: Path, kind: str, paths: list[Path], dry_run: bool) -> Leftover:
    """One scratch folder (or checkpoint part): removed when its marker's owner is gone; never without a marker."""
    state, owner = owner_state(marker)
    size = sum(size_of(p) for p in paths)
    if state == UNKNOWN:
        return Leftover(shown, kind, UNMARKED, None, size)
    if state in (LIVE, ELSEWHERE):
        return Leftover(shown, kind, state, owner, size)
    if dry_run:
        return Leftover(shown, kind, "stale", owner, size)
    with _holding(marker) as held:
        if not held:
            return Leftover(shown, kind, LIVE, read_owner(marker), size)
        for path in paths:
            remove(path)
    return Leftover(shown, kind, "removed", owner, size)


def _sweep_output(output: Path, paths: list[Path], dry_run: bool) -> list[Leftover]:
    """The temporary outputs of ``output`` and its lock: removed (a replaced output put back) when the lock's owner is gone.

    Without a lock (left by an sccr before owner markers, maybe still running) only
    ``.tmp.h5ad`` files and ``.tmp.zarr`` folders are recognised, and kept.
    """
    lock = lock_path(output)
    has_lock = lock in paths
    temps = [p for p in paths if p != lock and (has_lock or _is_plain_temp(p))]
    if not temps and not has_lock:
        return []
    if not has_lock:
        return [Leftover(p, _kind(p), UNMARKED, None, size_of(p)) for p in temps]
    state, owner = owner_state(lock)
    if state == UNKNOWN:  # a lock without an owner: being taken right now, or its taker died before writing its name
        state = "stale" if _old_enough(lock) else "recent"
    if state in (LIVE, ELSEWHERE, "recent"):
        return [Leftover(p, _kind(p), state, owner, size_of(p)) for p in temps]
    if dry_run:
        return [Leftover(p, _kind(p), "stale", owner, size_of(p)) for p in temps + [lock]]
    out = []
    with _holding(lock) as held:
        if not held:
            return [Leftover(p, _kind(p), LIVE, read_owner(lock), size_of(p)) for p in temps]
        for path in temps:
            size = size_of(path)
            replaced = path / output.name
            if path.name.endswith(".old") and replaced.exists() and not output.exists():
                os.replace(
                    replaced, output
                )  # the run ended between moving the old output aside and putting the new one
                remove(path)
                out.append(Leftover(output, "output", "restored", owner, size))
                continue
            remove(path)
            out.append(Leftover(path, _kind(path), "removed", owner, size))
        out.append(Leftover(lock, "lock file", "removed", owner, size_of(lock)))
        lock.unlink(missing_ok=True)
    return out


def _is_plain_temp(path: Path) -> bool:
    name = path.name
    return (name.endswith(".tmp.h5ad") and path.is_file()) or (name.endswith(".tmp.zarr") and path.is_dir())


def _kind(path: Path) -> str:
    if path.name.endswith(".sccr-lock"):
        return "lock file"
    return "replaced output" if path.name.endswith(".old") else "temporary output"


# --- scratch folders -------------------------------------------------------------------------


def owned_folder(parent: str | os.PathLike | None) -> tuple[Path, Claim]:
    """A new scratch folder ``sccr-scratch-*`` in ``parent`` (default: the system's temporary folder), with this process's marker."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    try:
        return folder, mark(folder / OWNER_MARKER)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def scratch_parent(scratch_dir: str | os.PathLike | None) -> Path:
    import tempfile

    return Path(tempfile.gettempdir() if scratch_dir is None else scratch_dir)


# --- free space and full disks ---------------------------------------------------------------


def free_bytes(folder: Path) -> int | None:
    """Bytes this user may still write in ``folder``'s file system, or ``None`` if unknown."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _device(folder: Path) -> int | None:
    try:
        return os.stat(folder).st_dev
    except OSError:
        return None


def check_free_space(needs: list[tuple[Path, int, str]]) -> None:
    """Refuse a run whose files do not fit: ``needs`` lists ``(folder, bytes, what)``; folders on one file system add up."""
    by_device: dict[object, list[tuple[Path, int, str]]] = {}
    for folder, n_bytes, what in needs:
        if n_bytes > 0:
            by_device.setdefault(_device(folder) or folder, []).append((folder, n_bytes, what))
    for group in by_device.values():
        folder = group[0][0]
        free = free_bytes(folder)
        total = sum(n for _, n, _ in group)
        if free is None or total <= free:
            continue
        what = " and ".join(dict.fromkeys(w for _, _, w in group))
        raise InputError(
            f"not enough free space in {str(folder)!r} for {what}: the run needs about {format_size(total)} there but "
            f"{format_size(free)} is free; free some space there, or choose another folder for what goes there "
            "(OUTPUT's folder, --scratch-dir, --checkpoint)"
        )


def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` says a file system is full (or a disk quota is exceeded), also as h5py words it."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return isinstance(err, OSError) and (
        "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text
    )


def no_space_error(folder: Path, what: str, needed: int | None) -> InputError:
    free = free_bytes(folder)
    need = f"about {format_size(needed)}" if needed else "more space"
    have = "" if free is None else f", {format_size(free)} is free now"
    return InputError(
        f"no space left in {str(folder)!r} while writing {what} (the run needs {need} there{have}); "
        "its partial files were removed: free some space there or choose another folder, then run again"
    )


@contextmanager
def no_space_named(folder: Path, what: str, needed: int | None) -> Iterator[None]:
    """Turn a full-disk ``OSError`` inside the block into one line naming ``folder``, ``what`` and the space needed."""
    try:
        yield
    except OSError as err:
        if is_no_space(err):
            raise no_space_error(folder, what, needed) from err
        raise


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on them as before.

    For short writes inside the standard library (a zip archive, a manifest): an
    exception raised halfway through one leaves a half-built object whose clean-up
    fails noisily later. Outside the main thread signals cannot be caught, and
    nothing is deferred (nor where a handler was set outside Python).
    """
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in held}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    caught: list[int] = []
    for signum in held:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])
