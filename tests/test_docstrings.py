"""Every docstring example in `kit` runs and prints what it says (examples marked +SKIP need a model or a cache)."""

import doctest
import importlib
import pkgutil

import pytest

import kit

MODULES = sorted(m.name for m in pkgutil.walk_packages(kit.__path__, "kit.") if m.name != "kit.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
