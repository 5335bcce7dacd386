"""The examples in the modules' docstrings (`>>>`) run, and give what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.conftest import ROOT

def _runs_examples(text: str) -> bool:
    """Some `>>>` line that is not marked +SKIP (an example that needs a model on disk is skipped)."""
    return any(">>>" in line and "+SKIP" not in line for line in text.splitlines())


MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for package in ("playground", "components")
    for p in (ROOT / package).rglob("*.py")
    if _runs_examples(p.read_text(encoding="utf-8"))
)


def test_there_are_examples_to_run():
    assert "playground.options" in MODULES and "components.state" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no example that ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run it with -s to see)"
