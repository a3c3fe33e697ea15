"""The fusion registry: register, list, look up and build fusions by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mmfuse._registry import Registry
from mmfuse.fusion.base import CAPABILITIES, Fusion

__all__ = ["create_fusion", "fusion_kwargs", "get_fusion_class", "is_fusion", "list_fusions", "register_fusion"]

_FUSIONS: Registry[type[Fusion]] = Registry("fusion")

F = TypeVar("F", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[F], F]:
    """Class decorator registering a :class:`~mmfuse.fusion.Fusion` subclass under ``name``.

    The class must subclass :class:`Fusion`, and every capability flag it sets to False
    (``supports_compile``, ``supports_export``, ``handles_missing``) needs a reason in its ``limitations``.

    Raises:
        ValueError: if the name is taken or malformed.
        TypeError: if the class is not a Fusion or declares a limitation without a reason.

    Example:
        >>> from mmfuse.fusion import ConcatFusion
        >>> register_fusion("concat")(ConcatFusion)  # names are unique
        Traceback (most recent call last):
        ...
        ValueError: A fusion named 'concat' is already registered (...); choose another name.
    """
    register = _FUSIONS.register(name)

    def decorator(cls: F) -> F:
        if not (isinstance(cls, type) and issubclass(cls, Fusion)):
            raise TypeError(f"register_fusion({name!r}) must decorate a subclass of Fusion. Got {cls!r}.")
        for flag in CAPABILITIES:
            if not getattr(cls, flag) and not cls.limitations.get(flag):
                raise TypeError(
                    f"Fusion {cls.__name__} sets {flag}=False but gives no reason; add limitations={{{flag!r}: "
                    "'why'}} to the class."
                )
        register(cls)
        return cls

    return decorator


def list_fusions() -> list[str]:
    """Return the registered fusion names, sorted.

    Example:
        >>> {"concat", "cross_attention", "gated", "weighted"} <= set(list_fusions())
        True
    """
    return _FUSIONS.names()


def is_fusion(name: str) -> bool:
    """Return whether a fusion called ``name`` is registered.

    Example:
        >>> is_fusion("gated"), is_fusion("nope")
        (True, False)
    """
    return name in _FUSIONS


def get_fusion_class(name: str) -> type[Fusion]:
    """Return the class registered as ``name``.

    Raises:
        ValueError: naming the unknown name and listing the valid ones.

    Example:
        >>> get_fusion_class("concat").__name__
        'ConcatFusion'
    """
    return _FUSIONS.get(name)


def fusion_kwargs(name: str) -> dict[str, Any]:
    """Return the keyword arguments the fusion ``name`` accepts, with their defaults.

    Example:
        >>> fusion_kwargs("cross_attention")["causal"]
        False
    """
    cls = get_fusion_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]  # skip self, modality_dims, out_dim
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def create_fusion(name: str, modality_dims: Mapping[str, int], out_dim: int, **kwargs: Any) -> Fusion:
    """Build the fusion registered as ``name``.

    Args:
        name: A name from :func:`list_fusions`.
        modality_dims: Modality name -> feature size ``D_m``.
        out_dim: Output feature size.
        **kwargs: The fusion's own keyword arguments (see :func:`fusion_kwargs`).

    Raises:
        ValueError: for an unknown name (listing valid ones) or an unknown keyword (listing accepted ones).

    Example:
        >>> fusion = create_fusion("weighted", {"audio": 3, "text": 5}, 8)
        >>> fusion.modalities
        ('audio', 'text')
    """
    cls = get_fusion_class(name)
    accepted = fusion_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown keyword argument(s) {unknown} for fusion {name!r}; accepted: {sorted(accepted) or 'none'}."
        )
    return cls(modality_dims, out_dim, **kwargs)
