"""The imputation options: the one place that defines their defaults, choices, checks and documentation.

:class:`Options` is frozen and validated on construction. The faces derive from
it: :class:`sccr.SCCR` and :func:`sccr.impute` take its fields as keyword
arguments (their defaults are read from :data:`DEFAULTS`, a test checks that
they agree), their docstrings include :func:`options_doc`, and the command line
builds its flags from :func:`cli_fields`.
"""

from __future__ import annotations

import os
import re
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ._errors import InputError

METHODS = ("sccr", "scfp", "scbfp")
KNN_MODES = ("auto", "exact", "approx")
BACKENDS = ("local", "dask")


def _option(
    default, doc: str, *, choices: tuple | None = None, flag: str | None = None, cli: type | None = None
) -> Any:
    """A field of :class:`Options`: ``doc`` for the docstrings, ``choices``, and how the command line shows it.

    ``cli``: the type of its command-line value (``None``: not on the command line);
    ``flag``: the flag when it is not ``--name-with-dashes``.
    """
    return field(default=default, metadata={"doc": doc, "choices": choices, "flag": flag, "cli": cli})


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {value}")
    return value


def _check_choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_seed(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"random_state must be a non-negative integer or None, got {value!r}")
    return int(value)


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_n_jobs(n_jobs: int | None) -> int:
    """``None`` or ``-1``: every core this process may use."""
    if n_jobs is None or (n_jobs == -1 and not isinstance(n_jobs, bool)):
        return available_cores()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise InputError(f"n_jobs must be a positive integer, -1 or None, got {n_jobs!r}")
    return int(n_jobs)


def someone_watching() -> bool:
    """Whether progress bars would be seen: standard error is a terminal, or a Jupyter kernel runs this."""
    import sys

    if bool(getattr(sys.stderr, "isatty", lambda: False)()):
        return True
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})


def resolve_progress(progress: bool | None) -> bool:
    """Whether to show progress bars: ``None`` means where someone is watching (:func:`someone_watching`)."""
    return someone_watching() if progress is None else bool(progress)


_SIZE = re.compile(r"([0-9]*\.?[0-9]+)\s*([kmgt]?(?:i?b)?)", re.IGNORECASE)


def parse_memory_size(value) -> int | None:
    """Bytes from ``None`` (no budget), a number of bytes, or a size such as ``"8G"``, ``"512MiB"``, ``"1.5 GB"``.

    Units are powers of 1024 (``K``, ``M``, ``G``, ``T``, with or without ``B``/``iB``).
    """
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise InputError(f"memory budget must be a size such as 8G, 512M or 16GiB, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).upper()
    else:
        raise InputError(f"memory budget must be a size such as 8G or a number of bytes, got {value!r}")
    if not np.isfinite(number):
        raise InputError(f"memory budget must be positive, got {value!r}")
    size = int(number * 1024 ** "BKMGT".index(unit[0] if unit else "B"))
    if size <= 0:
        raise InputError(f"memory budget must be positive, got {value!r}")
    return size


def format_size(n_bytes: float) -> str:
    """``n_bytes`` in the largest binary unit that keeps a number >= 1 (``"10.0 MiB"``, ``"2.3 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n_bytes) < 1024:
            return f"{n_bytes:.0f} B" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"


@dataclass(frozen=True)
class Options:
    """Validated options of one imputation (every face builds one; see :func:`sccr.impute` for the meaning).

    Construction checks every value and raises :class:`~sccr.InputError` naming
    the bad one; ``n_jobs`` and ``progress`` are resolved (to a number of threads
    and to whether bars are shown) and ``memory_budget`` is parsed to bytes.
    """

    method: str = _option(
        "sccr",
        '``"sccr"``; ``"scfp"`` (hard propagation on the k-NN graph of X, then soft propagation on a graph '
        'rebuilt from it, as in scFP\'s code); ``"scbfp"`` (hard propagation over a gene graph, then soft '
        "propagation over cells, as in scBFP's code).",
        choices=METHODS,
        cli=str,
    )
    k: int = _option(15, "Neighbours per cell in the cell graphs.", cli=int)
    k_gene: int = _option(2, "Neighbours per gene in the gene graph.", cli=int)
    n_iter: int = _option(40, "Iterations of every propagation.", cli=int)
    alpha: float = _option(0.05, "Weight of the pre-imputation in the blend (ALGORITHM.md step 4).", cli=float)
    beta: float = _option(0.99, "Propagation weight of the final soft (denoising) propagation.", cli=float)
    gamma: float = _option(
        0.01,
        "Weight of the blend in the output (``1`` returns the blend itself, as in the paper's dropout-recovery runs).",
        cli=float,
    )
    sym_final: bool = _option(
        True,
        "Symmetrise the final cell graph (the authors use ``False`` for Worm Neuron, Zeisel, Baron Mouse).",
        flag="--no-sym-final",
        cli=bool,
    )
    knn: str = _option(
        "auto",
        'Neighbour search for the cell graphs: ``"exact"``, ``"approx"`` (candidates from a projection, '
        'scored with the exact cosine; docs/knn.md) or ``"auto"`` (approximate from 20,000 cells on). '
        "Gene graphs are always exact.",
        choices=KNN_MODES,
        cli=str,
    )
    random_state: int | None = _option(
        0, "Seed of the approximate search (exact runs are deterministic whatever its value).", flag="--seed", cli=int
    )
    n_jobs: int | None = _option(None, "Threads (``None`` or ``-1``: all available cores).", cli=int)
    progress: bool | None = _option(
        None, "Progress bars, one per stage (``None``: where someone is watching: a terminal or a notebook)."
    )
    backend: str = _option(
        "local",
        '``"local"`` (threads of this process) or ``"dask"``: propagation chunks and exact k-NN row blocks '
        "run on the workers of a dask.distributed cluster, with results equal to the local backend's (docs/dask.md).",
        choices=BACKENDS,
        cli=str,
    )
    client: Any = _option(None, 'The ``distributed.Client`` for ``backend="dask"`` (``None``: the active client).')
    memory_budget: int | str | None = _option(
        None,
        'Memory the run may use, in bytes or as a size such as ``"8G"`` (``None``: what is available now). '
        "When the run does not fit in it, its intermediate N x G matrices go to scratch files (same result, "
        "bitwise); when it does not fit even so, it is refused before it starts.",
        cli=str,
    )
    scratch_dir: str | None = _option(
        None,
        "Folder for those scratch files (``None``: the system's temporary folder); they are deleted at the end.",
        cli=str,
    )

    def __post_init__(self) -> None:
        checked = {
            "method": _check_choice("method", self.method, METHODS),
            "k": _check_int("k", self.k, 1),
            "k_gene": _check_int("k_gene", self.k_gene, 1),
            "n_iter": _check_int("n_iter", self.n_iter, 0),
            "alpha": _check_fraction("alpha", self.alpha),
            "beta": _check_fraction("beta", self.beta),
            "gamma": _check_fraction("gamma", self.gamma),
            "sym_final": bool(self.sym_final),
            "knn": _check_choice("knn", self.knn, KNN_MODES),
            "random_state": _check_seed(self.random_state),
            "n_jobs": resolve_n_jobs(self.n_jobs),
            "progress": resolve_progress(self.progress),
            "backend": _check_choice("backend", self.backend, BACKENDS),
            "memory_budget": parse_memory_size(self.memory_budget),
            "scratch_dir": _check_scratch_dir(self.scratch_dir),
        }
        if self.backend == "local" and self.client is not None:
            raise InputError("client= is only used with backend='dask'; pass backend='dask' as well")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_kwargs(cls, **kwargs) -> Options:
        """Options from keyword arguments, with an error naming any that is not an option."""
        unknown = sorted(set(kwargs) - set(OPTION_NAMES))
        if unknown:
            raise InputError(
                f"unknown option(s) {', '.join(map(repr, unknown))}; the options are: {', '.join(OPTION_NAMES)}"
            )
        return cls(**kwargs)

    def replace(self, **changes) -> Options:
        """A copy with ``changes``, validated again."""
        return replace(self, **changes)

    def record(self) -> dict:
        """The options as plain values, for ``uns`` and result files (the client as nothing: it is recorded elsewhere)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "client"}


def _check_scratch_dir(scratch_dir) -> str | None:
    """``None`` (the system's temporary folder) or an existing, writable folder for scratch files."""
    if scratch_dir is None:
        return None
    if not os.path.isdir(scratch_dir):
        raise InputError(f"scratch folder {str(scratch_dir)!r} does not exist; create it or pass another folder")
    if not os.access(scratch_dir, os.W_OK):
        raise InputError(f"scratch folder {str(scratch_dir)!r} is not writable; pass another folder")
    return os.fspath(scratch_dir)


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Options))


class _Defaults:
    """The default of every option as an attribute (``DEFAULTS.k``), unresolved (``n_jobs`` stays ``None``)."""

    def __init__(self) -> None:
        for f in fields(Options):
            setattr(self, f.name, f.default)


#: The defaults the faces' signatures read (``k: int = DEFAULTS.k``).
DEFAULTS = _Defaults()


def cli_fields() -> list[Field]:
    """The options the command line offers, in order (each with ``metadata['cli']``, its value type)."""
    return [f for f in fields(Options) if f.metadata["cli"] is not None]


def cli_flag(f: Field) -> str:
    """``--k-gene`` for ``k_gene``, or the field's own flag."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def options_doc(indent: str = "    ") -> str:
    """The numpy-style parameter entries of every option, for the faces' docstrings."""
    lines = []
    for f in fields(Options):
        lines.append(f"{indent}{f.name}")
        lines.append(f"{indent}    {f.metadata['doc']}")
    return "\n".join(lines)


def with_options_doc(obj):
    """Decorator: replace the line ``{options}`` of ``obj``'s docstring with :func:`options_doc`."""
    if obj.__doc__:
        for line in obj.__doc__.splitlines():
            if line.strip() == "{options}":
                indent = line[: len(line) - len(line.lstrip())]
                obj.__doc__ = obj.__doc__.replace(line, options_doc(indent))
                break
    return obj
