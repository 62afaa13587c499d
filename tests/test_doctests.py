"""Every ``>>>`` example in the package runs, in every module (sub-packages included).

Importing each module here also checks that none needs more than the extras the test
environment installs (``dev,serve,jieba,llamacpp``) just to be imported.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import thinksearch

# __main__ runs the CLI when imported.
MODULES = sorted(m.name for m in pkgutil.walk_packages(thinksearch.__path__, "thinksearch.")
                 if m.name != "thinksearch.__main__")


def test_every_module_is_found():
    assert {"thinksearch.agent", "thinksearch.serve", "thinksearch.search.local"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the output above)"
    if ">>>" in inspect.getsource(module):  # an example doctest can't reach (inside a function) never runs
        assert result.attempted > 0, f"{name} has >>> examples that doctest does not collect"
