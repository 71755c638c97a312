"""Sphinx configuration of the sccr documentation (`make docs`)."""

from __future__ import annotations

from importlib.metadata import version as _version

project = "sccr"
author = "the sccr developers"
copyright = "2026, the sccr developers"
release = _version("sccr")  # one source: pyproject.toml, through the installed metadata
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # MyST markdown pages and executed notebooks (tutorial.md)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpy-style docstrings
    "sphinx_autodoc_typehints",  # after napoleon
]

# Pages are markdown; README.md and CHANGELOG.md are included from the repository root.
# .rst first: autosummary writes its stub pages (docs/generated/) with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# fidelity.md is the bare table scripts/fidelity.py writes; fidelity-check.md includes it.
exclude_patterns = ["_build", "jupyter_execute", "fidelity.md", "Thumbs.db", ".DS_Store"]
master_doc = "index"

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# The tutorial runs on every build; an error in it fails the build.
nb_execution_mode = "auto"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True

autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
typehints_document_rtype = False
always_document_param_types = False

html_theme = "furo"
html_title = f"sccr {release}"
html_static_path: list[str] = []
