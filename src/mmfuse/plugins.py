"""User code in mmfuse: plug-in modules and the Python entry points that register components.

A plug-in is a module whose import registers components (a fusion with ``@register_fusion``, a data set with
``register_dataset``, a metric with ``register_metric``, ...). The CLI imports the modules named with
``--plugin MODULE`` and, at start-up, every entry point a package declares in one of :data:`ENTRY_POINT_GROUPS`::

    # the plug-in package's pyproject.toml
    [project.entry-points."mmfuse.fusions"]
    my_fusion = "my_package.fusions"

Loading an entry point imports its module (which registers); when it names a function (``"pkg.mod:setup"``),
that function is called with no arguments.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

from mmfuse.errors import MmfuseWarning

__all__ = ["ENTRY_POINT_GROUPS", "load_entry_points", "load_plugins"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUPS = (
    "mmfuse.fusions",
    "mmfuse.datasets",
    "mmfuse.metrics",
    "mmfuse.normalizers",
    "mmfuse.extractors",
    "mmfuse.analyses",
    "mmfuse.plugins",
)
"""The entry-point groups read at start-up (one per component family, and a general one)."""

_loaded: set[str] = set()


def load_plugins(modules: Iterable[str] | None) -> list[str]:
    """Import each named module (``pkg.module``, or a ``.py`` file path) so its components register.

    Args:
        modules: Module names (repeat ``--plugin`` or comma-separate); ``None`` or empty loads nothing.

    Returns:
        The module names imported now (a module imported before is not imported twice).

    Raises:
        ValueError: A module cannot be imported; the message names it and the reason.

    Example:
        >>> load_plugins(["json"])
        ['json']
    """
    done: list[str] = []
    for item in modules or ():
        for name in (n.strip() for n in item.split(",")):
            if not name or name in _loaded:
                continue
            try:
                _import(name)
            except Exception as exc:  # the plug-in's own error, whatever it is, is reported as one line
                raise ValueError(
                    f"The plug-in module {name!r} (--plugin) could not be imported: {type(exc).__name__}: {exc}. "
                    "Give an importable module name (on sys.path / installed) or a .py file, e.g. "
                    "--plugin my_package.fusions or --plugin ./my_fusions.py."
                ) from exc
            _loaded.add(name)
            done.append(name)
    return done


def _import(name: str) -> None:
    """Import a module by name, or a ``.py`` file by path (registered in ``sys.modules`` under its stem)."""
    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{str(path)!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise


def load_entry_points(groups: Iterable[str] = ENTRY_POINT_GROUPS) -> list[str]:
    """Load every installed entry point of the given groups; a broken one is warned about and skipped.

    Returns:
        ``"group:name"`` of each entry point loaded now.
    """
    done: list[str] = []
    for group in groups:
        for ep in importlib.metadata.entry_points(group=group):
            key = f"{group}:{ep.name}={ep.value}"
            if key in _loaded:
                continue
            _loaded.add(key)
            try:
                obj = ep.load()
                if inspect.isfunction(obj):  # "pkg.mod:setup"; a module or a class only needs importing
                    obj()
            except Exception as exc:  # one broken plug-in must not stop the CLI
                warnings.warn(
                    f"The entry point {ep.name!r} ({ep.value}) of group {group!r} could not be loaded and is "
                    f"skipped: {type(exc).__name__}: {exc}",
                    MmfuseWarning,
                    stacklevel=2,
                )
                continue
            logger.info("loaded plug-in %s:%s (%s)", group, ep.name, ep.value)
            done.append(f"{group}:{ep.name}")
    return done
