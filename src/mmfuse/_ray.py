"""The one Ray helper: import Ray with an actionable error and start (or join) an instance.

``pip install 'mmfuse[ray]'``. Used by ``mmfuse extract --ray`` (one task per media file) and by the ``ray``
executor of :mod:`mmfuse.evaluate.executors`: ``compare --executor ray`` (one task per fusion x seed run),
``tune --executor ray`` (one task per search worker) and ``analyze --executor ray`` (one per analysis of a model).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ensure_ray", "ray_module"]


def ray_module(what: str = "The 'ray' executor") -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{what} needs Ray; install it with: pip install 'mmfuse[ray]'.") from exc
    return ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None, what: str = "The 'ray' executor") -> Any:
    """Ray, initialised (an instance already running in this process is used as it is).

    Otherwise ``ray.init`` joins ``address`` (``"ray://head:10001"``, ``"auto"``) or, when None, starts a local
    instance of ``num_cpus`` CPUs.
    """
    ray = ray_module(what)
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return ray
