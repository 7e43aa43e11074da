"""Plug-ins: classes a scenario names as ``module:Class``, loaded without editing the package.

A scenario may name its operator's strategy (``[operator] policy``), extra agents
(``[[agents]] class``) and extra metrics (``[metrics] plugins``) as ``module:Class``.
The module is imported by name, from the scenario file's folder first (so a plug-in
file beside the scenario works) and then from ``sys.path`` (an installed package). Each
kind has a small documented interface (:class:`~.adversary.Adversary`,
:class:`~.agents.Agent`, :class:`~.metrics.Metric`); a class that does not derive from
it is refused with a :class:`~.config.ScenarioError`, as is a module or class that does
not exist.

Only the *name* ever crosses a process boundary: a sweep's task carries the scenario
document, and every worker imports the plug-in itself (a Dask worker on another machine
needs the module on its own path).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TypeVar

from .config import ScenarioError

T = TypeVar("T")


def is_plugin(name: str) -> bool:
    """Whether ``name`` is ``module:Class`` rather than a built-in name."""
    return ":" in name


def load_class(spec: str, base: type[T], base_dir: Path | None, what: str) -> type[T]:
    """The class ``spec`` (``module:Class``) names, checked to derive from ``base``.

    Raises:
        ScenarioError: the name is malformed, the module or class does not exist, or the
            class is not a ``base``.
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name.isidentifier():
        raise ScenarioError(f"{what} {spec!r}: expected module:Class")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ScenarioError(f"{what} {spec!r}: cannot import {module_name!r}: {error}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise ScenarioError(f"{what} {spec!r}: not a {base.__module__}.{base.__qualname__}")
    return cls
