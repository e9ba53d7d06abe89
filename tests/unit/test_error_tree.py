"""One error tree: every exception stenod's core and adapters raise on purpose derives from
``StenodError``, and the tree drawn in ``stenod.errors`` names every class it defines."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import stenod
import stenod.errors

# Not a failure stenod handles: misuse of a closed worker thread, a bug (a RuntimeError).
_OUTSIDE = {"stenod.adapters.thread_lane.LaneClosed"}


def _stenod_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(stenod.__path__, "stenod."):
        if info.name == "stenod.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_exception_stenod_defines_is_on_the_one_tree() -> None:
    outside = {
        name
        for name, cls in _stenod_exceptions().items()
        if not issubclass(cls, stenod.errors.StenodError) and name not in _OUTSIDE
    }
    assert outside == set()


def test_the_drawn_tree_names_every_class_of_the_errors_module() -> None:
    drawing = stenod.errors.__doc__ or ""
    defined = {
        name
        for name, cls in vars(stenod.errors).items()
        if inspect.isclass(cls) and issubclass(cls, stenod.errors.StenodError)
    }
    assert {name for name in defined if name not in drawing} == set()
