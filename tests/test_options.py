"""The options object: one source of defaults, choices, checks and docs for every face."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import sccr
from sccr._options import DEFAULTS, OPTION_NAMES, Options, cli_fields, cli_flag, format_size, options_doc
from sccr.cli import build_parser


def _signature_options(function) -> dict:
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in OPTION_NAMES}


@pytest.mark.parametrize("face", [sccr.SCCR.__init__, sccr.impute], ids=["SCCR", "impute"])
def test_every_face_takes_every_option_with_its_default(face):
    parameters = inspect.signature(face).parameters
    assert set(OPTION_NAMES) <= set(parameters)
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in OPTION_NAMES)
    assert _signature_options(face) == {f.name: f.default for f in dataclasses.fields(Options)}


@pytest.mark.parametrize("face", [sccr.SCCR, sccr.impute], ids=["SCCR", "impute"])
def test_docstrings_document_every_option(face):
    for f in dataclasses.fields(Options):
        assert f"\n    {f.name}\n" in face.__doc__ or f"\n        {f.name}\n" in face.__doc__, f.name
    assert "{options}" not in face.__doc__


def test_cli_flags_are_derived_from_the_options():
    impute = build_parser()._subparsers._group_actions[0].choices["impute"]
    actions = {action.dest: action for action in impute._actions}
    for f in cli_fields():
        action = actions[f.name]
        assert cli_flag(f) in action.option_strings
        assert action.default == f.default
        assert (tuple(action.choices) if action.choices else None) == f.metadata["choices"]
    args = build_parser().parse_args(["impute", "in.h5ad", "out.h5ad"])
    assert Options(**{f.name: getattr(args, f.name) for f in cli_fields()}) == Options()
    assert {"--seed", "--no-sym-final", "--k-gene", "--memory-budget"} <= {cli_flag(f) for f in cli_fields()}


def test_options_are_validated_and_frozen():
    options = Options(k=7, n_jobs=1, progress=False, memory_budget="2K")
    assert options.k == 7 and options.n_jobs == 1 and options.memory_budget == 2048
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.k = 3
    with pytest.raises(sccr.InputError, match="k must be an integer >= 1"):
        options.replace(k=0)
    with pytest.raises(sccr.InputError, match=r"unknown option\(s\) 'kk'; the options are: method, k,"):
        Options.from_kwargs(kk=3)
    assert "client" not in options.record() and options.record()["k"] == 7


def test_defaults_are_the_declared_ones_unresolved():
    assert DEFAULTS.n_jobs is None and DEFAULTS.progress is None and DEFAULTS.k == 15
    assert Options().n_jobs >= 1 and Options().progress in (True, False)


@pytest.mark.parametrize(
    "n_bytes,text", [(0, "0 B"), (1023, "1023 B"), (10 << 20, "10.0 MiB"), (3 << 30, "3.0 GiB"), (5 << 40, "5.0 TiB")]
)
def test_sizes_are_shown_in_a_unit_that_fits(n_bytes, text):
    assert format_size(n_bytes) == text


def test_options_doc_lists_every_option():
    doc = options_doc("")
    assert all(f"{name}\n" in doc + "\n" for name in OPTION_NAMES)
