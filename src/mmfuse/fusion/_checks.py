"""Keyword-argument checks shared by the fusion zoo (one wording for every fusion's errors)."""

from __future__ import annotations

__all__ = ["check_int", "check_probability"]


def check_int(owner: str, name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer (not a bool) ``>= minimum``.

    Raises:
        ValueError: naming the parameter, its owner and the value.

    Example:
        >>> check_int("MyFusion", "layers", 2)
        2
        >>> check_int("MyFusion", "window", -1, minimum=0)
        Traceback (most recent call last):
        ...
        ValueError: The 'window' parameter of MyFusion must be an integer >= 0. Got -1 instead.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"The {name!r} parameter of {owner} must be {what}. Got {value!r} instead.")
    return value


def check_probability(owner: str, name: str, value: object) -> float:
    """Return ``value`` as a float if it is a number (not a bool) in ``[0, 1)``, e.g. a dropout rate.

    Raises:
        ValueError: naming the parameter, its owner and the value.

    Example:
        >>> check_probability("MyFusion", "dropout", 0.1)
        0.1
        >>> check_probability("MyFusion", "dropout", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: The 'dropout' parameter of MyFusion must be a number in [0, 1). Got 1.0 instead.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"The {name!r} parameter of {owner} must be a number in [0, 1). Got {value!r} instead.")
    return float(value)
