"""The normaliser base class and the normaliser registry.

A normaliser follows the scikit-learn estimator contract, adapted to masked temporal data:

* ``__init__`` only stores its (typed, keyword-able) arguments; :meth:`Normalizer.get_params` returns them;
* :meth:`Normalizer.fit` learns from the rows the mask marks present and sets the fitted attributes, whose
  names end in ``_`` (``n_features_in_``, ``n_samples_seen_`` and the class's own ``fitted_arrays``);
* :meth:`Normalizer.transform` / :meth:`Normalizer.inverse_transform` raise
  :class:`~mmfuse.errors.NotFittedError` before ``fit`` and return rows the mask marks missing as exact zeros.

Subclasses implement ``_fit`` (numpy, float64, present rows only), ``_transform`` and ``_inverse_transform``
(present rows of either backend) and register themselves with :func:`register_normalizer` so that saved
normalisers can be loaded by name. As in scikit-learn, ``__init__`` stores each argument under its own name
(``get_params`` reads them back), and the parameters must be JSON values for the normaliser to be saved.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from mmfuse._registry import Registry
from mmfuse.errors import DataError, NotFittedError
from mmfuse.preprocess._arrays import ArrayT, check_input, is_floating, to_float, to_numpy, where_rows

__all__ = [
    "Normalizer",
    "create_normalizer",
    "is_normalizer",
    "list_normalizers",
    "normalizer_name",
    "register_normalizer",
]

_REGISTRY: Registry[type[Normalizer]] = Registry("normaliser")

N = TypeVar("N", bound="Normalizer")


class Normalizer:
    """Base class of the per-modality normalisers.

    Class attributes (capabilities the tests and the save format read):
        fitted_arrays: Names of the fitted numpy attributes saved to safetensors (e.g. ``("mean_", "scale_")``).
        fitted_scalars: Names of the fitted int/float attributes saved to JSON.
        is_invertible: Whether :meth:`inverse_transform` recovers the input exactly (up to float rounding).
        preserves_dtype: Whether an integer input keeps its dtype (otherwise outputs are floating point).

    Attributes:
        n_features_in_: ``D`` seen by :meth:`fit`.
        n_samples_seen_: Number of present rows :meth:`fit` learned from.
    """

    fitted_arrays: ClassVar[tuple[str, ...]] = ()
    fitted_scalars: ClassVar[tuple[str, ...]] = ("n_features_in_", "n_samples_seen_")
    is_invertible: ClassVar[bool] = True
    preserves_dtype: ClassVar[bool] = False

    n_features_in_: int
    n_samples_seen_: int

    def __init__(self) -> None:
        pass

    # ----------------------------------------------------------------------------------------------- params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly (no *args/**kwargs).")
            names.append(p.name)
        return sorted(names)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments as a dict (``type(self)(**get_params())`` builds an unfitted copy)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------------------------------- fitted state
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or a load) has set every fitted attribute."""
        return all(hasattr(self, name) for name in (*self.fitted_scalars, *self.fitted_arrays))

    def _check_fitted(self, method: str) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet, so {method} cannot run. Call fit(X, mask) with "
                "the training data first."
            )

    def _clear_fitted(self) -> None:
        for name in (*self.fitted_scalars, *self.fitted_arrays):
            self.__dict__.pop(name, None)

    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict[str, int | float]]:
        """Return the fitted state as ``(arrays, scalars)``: what the save format stores.

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        self._check_fitted("fitted_state")
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in self.fitted_arrays}
        scalars = {name: getattr(self, name) for name in self.fitted_scalars}
        return arrays, scalars

    def set_fitted_state(self, arrays: Mapping[str, np.ndarray], scalars: Mapping[str, int | float]) -> None:
        """Restore a state returned by :meth:`fitted_state` (used when loading).

        Raises:
            DataError: when an entry is missing or has the wrong shape.
        """
        missing = [n for n in self.fitted_arrays if n not in arrays]
        missing += [n for n in self.fitted_scalars if n not in scalars]
        if missing:
            raise DataError(f"The fitted state of {type(self).__name__} lacks {missing}.")
        self._clear_fitted()
        for name in self.fitted_scalars:
            setattr(self, name, scalars[name])
        for name in self.fitted_arrays:
            setattr(self, name, np.asarray(arrays[name]))
        try:
            self._check_state()
        except DataError:
            self._clear_fitted()
            raise

    def _check_state(self) -> None:
        """Check the fitted attributes after a load; subclasses add their own shape and value checks."""
        d = self.n_features_in_
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
            raise DataError(f"{type(self).__name__}.n_features_in_ must be a positive integer. Got {d!r}.")
        for name in self.fitted_arrays:
            value = getattr(self, name)
            if value.shape != (d,):
                raise DataError(
                    f"{type(self).__name__}.{name} must have shape ({d},) to match n_features_in_. Got {value.shape}."
                )
            if not np.isfinite(value).all():
                raise DataError(f"{type(self).__name__}.{name} holds non-finite values.")

    # ---------------------------------------------------------------------------------------------- fitting
    def fit(self: N, X: Any, mask: Any = None) -> N:
        """Learn the parameters from the rows of ``X`` that ``mask`` marks present.

        Rows the mask marks missing are ignored entirely: their values (NaN included) never reach the
        statistics. Calling ``fit`` again forgets the previous fit.

        Args:
            X: ``[S, D]`` training values (numpy array or torch tensor).
            mask: ``[S]`` bool, True where the row is present; None means every row is present.

        Returns:
            ``self``.

        Raises:
            DataError: on a wrong shape or mask, NaN/inf in a present row, or no present row at all.
        """
        mask_in = None if mask is None else to_numpy(mask)
        X_np, mask_np = check_input(type(self).__name__, "fit", to_numpy(X), mask_in, None)
        if X_np.shape[1] == 0:
            raise DataError(f"{type(self).__name__}.fit needs at least one feature. Got X of shape {X_np.shape}.")
        present = np.asarray(X_np)[np.asarray(mask_np)].astype(np.float64)  # [S_present, D]
        if present.shape[0] == 0:
            raise DataError(
                f"{type(self).__name__}.fit needs at least one present row; the mask marks all {X_np.shape[0]} "
                "rows missing."
            )
        self._clear_fitted()
        self._fit(present)
        self.n_features_in_ = int(present.shape[1])
        self.n_samples_seen_ = int(present.shape[0])
        return self

    def _fit(self, X: np.ndarray) -> None:
        """Set the class's ``fitted_arrays`` from the present rows ``X`` [S_present, D] (float64)."""

    # ------------------------------------------------------------------------------------------- transforms
    def transform(self, X: ArrayT, mask: Any = None) -> ArrayT:
        """Normalise the present rows of ``X``; rows the mask marks missing come back as exact zeros.

        Args:
            X: ``[S, D]`` (or ``[T, D]`` for one sequence) numpy array or torch tensor.
            mask: ``[S]`` bool, True where present; None means every row is present.

        Returns:
            An array of the same backend and shape. Floating-point inputs keep their dtype; integer inputs come
            back as float32 unless the class ``preserves_dtype``.

        Raises:
            NotFittedError: before :meth:`fit`.
            DataError: on a wrong shape, a ``D`` other than the fitted one, or NaN/inf in a present row.
        """
        return self._apply("transform", self._transform, X, mask)

    def inverse_transform(self, X: ArrayT, mask: Any = None) -> ArrayT:
        """Map normalised rows back to the original scale; missing rows come back as exact zeros.

        Args:
            X: ``[S, D]`` normalised values.
            mask: ``[S]`` bool, True where present; None means every row is present.

        Returns:
            The values in the original units (see the class's ``is_invertible`` and docstring for what is lost).

        Raises:
            NotFittedError: before :meth:`fit`.
            DataError: as :meth:`transform`.
        """
        return self._apply("inverse_transform", self._inverse_transform, X, mask)

    def fit_transform(self, X: ArrayT, mask: Any = None) -> ArrayT:
        """``fit(X, mask)`` then ``transform(X, mask)``."""
        return self.fit(X, mask).transform(X, mask)

    def _apply(self, method: str, fn: Callable[[ArrayT], ArrayT], X: ArrayT, mask: Any) -> ArrayT:
        self._check_fitted(method)
        X_in, mask_in = check_input(type(self).__name__, method, X, mask, self.n_features_in_)
        X_in = X_in if self.preserves_dtype else to_float(X_in)
        clean = where_rows(mask_in, X_in)  # missing rows -> 0 before any arithmetic: no NaN, no warnings
        out: Any = fn(clean)
        if not isinstance(out, type(clean)):
            raise TypeError(f"{type(self).__name__}.{method} changed the array backend.")
        if is_floating(clean):  # keep the input's float dtype (numpy arithmetic ran in float64)
            out = out.astype(clean.dtype, copy=False) if isinstance(out, np.ndarray) else out.to(clean.dtype)
        result: ArrayT = where_rows(mask_in, out)
        return result

    def _transform(self, X: ArrayT) -> ArrayT:
        raise NotImplementedError(f"{type(self).__name__} does not implement _transform.")

    def _inverse_transform(self, X: ArrayT) -> ArrayT:
        raise NotImplementedError(f"{type(self).__name__} does not implement _inverse_transform.")


# ------------------------------------------------------------------------------------------------- registry
def register_normalizer(name: str) -> Callable[[type[N]], type[N]]:
    """Register a :class:`Normalizer` subclass under ``name`` so that saved normalisers can be loaded by name.

    Args:
        name: Lower-case name without spaces, stored in ``normalizers.json``.

    Raises:
        ValueError: if the name is taken or malformed.
        TypeError: if the decorated object is not a Normalizer subclass.

    Example:
        >>> import numpy as np
        >>> @register_normalizer("doc-centre")
        ... class Centre(Normalizer):
        ...     fitted_arrays = ("mean_",)
        ...     def __init__(self) -> None: ...
        ...     def _fit(self, X): self.mean_ = X.mean(axis=0)
        ...     def _transform(self, X): return X - self.mean_
        ...     def _inverse_transform(self, X): return X + self.mean_
        >>> create_normalizer("doc-centre").fit(np.array([[1.0], [3.0]])).mean_
        array([2.])
    """
    add = _REGISTRY.register(name)

    def decorator(cls: type[N]) -> type[N]:
        if not (isinstance(cls, type) and issubclass(cls, Normalizer)):
            raise TypeError(f"register_normalizer({name!r}) decorates Normalizer subclasses. Got {cls!r}.")
        cls._param_names()  # refuses **kwargs sinks early
        add(cls)
        return cls

    return decorator


def list_normalizers() -> list[str]:
    """Return the registered normaliser names, sorted.

    Example:
        >>> {"identity", "l2", "zscore"} <= set(list_normalizers())
        True
    """
    return _REGISTRY.names()


def is_normalizer(name: str) -> bool:
    """Whether a normaliser is registered under ``name``."""
    return name in _REGISTRY


def create_normalizer(name: str, **params: Any) -> Normalizer:
    """Build the normaliser registered under ``name`` with its constructor ``params``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).

    Example:
        >>> create_normalizer("zscore", clip=5.0)
        ZScoreNormalizer(clip=5.0, with_mean=True, with_std=True)
    """
    return _REGISTRY.get(name)(**params)


def normalizer_name(normalizer: Normalizer | type[Normalizer]) -> str:
    """Return the registered name of a normaliser (instance or class).

    Raises:
        ValueError: if its exact class is not registered (a subclass of a registered class is not enough,
            since loading would build the parent instead).
    """
    cls = normalizer if isinstance(normalizer, type) else type(normalizer)
    for name in _REGISTRY:
        if _REGISTRY.get(name) is cls:
            return name
    raise ValueError(
        f"{cls.__name__} is not a registered normaliser, so it cannot be saved by name. "
        "Register it with @register_normalizer('your-name')."
    )
