"""The layout: no import cycles, no import from a lower layer to a higher one, one entry into the engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import import_graph  # noqa: E402


@pytest.fixture(scope="module")
def graph():
    return import_graph.import_graph()


def test_no_import_cycles(graph):
    assert import_graph.cycles(graph) == []


def test_imports_go_down_the_layers(graph):
    upward = [
        (m, t) for m, targets in graph.items() for t in targets if import_graph.layer_of(t) > import_graph.layer_of(m)
    ]
    assert upward == []


def test_one_entry_into_the_engine(graph):
    """Outside ``sccr._engine`` only its ``__init__`` is imported, never a module of it."""
    inside = [
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if t.startswith("sccr._engine.") and not m.startswith("sccr._engine")
    ]
    assert inside == []


def test_readme_layout_names_every_module(graph):
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("\n## ", 4)]
    missing = [m for m in graph if f"`{m.removeprefix('sccr.').replace('.', '/')}" not in layout and m != "sccr"]
    assert missing == []


def test_the_helper_finds_cycles_and_layers():
    assert import_graph.cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert import_graph.layer_of("sccr._engine.graph") < import_graph.layer_of("sccr._anndata")


def test_import_sccr_loads_no_heavy_module():
    """``import sccr`` stays light: the numerical stack loads on first use (python -X importtime)."""
    code = "import sys, sccr; print(sorted(m for m in ('numpy', 'scipy', 'anndata', 'sklearn', 'numba', 'zarr', 'pandas', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_resolve_on_first_use():
    import sccr

    assert all(getattr(sccr, name) is not None for name in sccr.__all__)
    assert sccr.tl.impute is sccr.impute
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sccr.nope  # noqa: B018
