"""One normaliser per modality: fit on a training view, transform records, save as JSON + safetensors.

The on-disk form is two files in one folder, never a pickle:

* ``normalizers.json``: format tag and version, the SHA-256 of the tensor file, and per modality the
  registered normaliser name, its constructor parameters, its fitted scalars and which tensors are its own;
* ``normalizers.safetensors``: every fitted array, keyed ``"<modality>/<attribute>"``.

Both are written atomically (temporary file + :func:`os.replace`), tensors first: the JSON is the index, and
its checksum makes a mismatched or damaged tensor file an error at load time rather than wrong numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import safetensors.numpy

from mmfuse._io import atomic_write_bytes, atomic_write_text
from mmfuse.data._spec import MODALITY_KINDS
from mmfuse.errors import DataError
from mmfuse.preprocess.base import Normalizer, create_normalizer, list_normalizers, normalizer_name
from mmfuse.preprocess.normalizers import IdentityNormalizer, L2Normalizer, ZScoreNormalizer

__all__ = [
    "JSON_NAME",
    "TENSORS_NAME",
    "ModalityNormalizers",
    "default_normalizers",
]

JSON_NAME = "normalizers.json"
"""File name of the JSON index written by :meth:`ModalityNormalizers.save`."""

TENSORS_NAME = "normalizers.safetensors"
"""File name of the fitted arrays written by :meth:`ModalityNormalizers.save`."""

_FORMAT = "mmfuse-normalizers"
_VERSION = 1

MN = TypeVar("MN", bound="ModalityNormalizers")
R = TypeVar("R")


class StackedSource(Protocol):
    """What :meth:`ModalityNormalizers.fit` needs from a data set view (``mmfuse.data.MultimodalDataset``)."""

    def stacked(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """Return every step of the view for ``modality``: values ``[S, D]`` and mask ``[S]``."""
        ...


def _kind_of(spec: Any) -> str:
    kind = getattr(spec, "kind", spec)
    return str(getattr(kind, "value", kind))


def default_normalizers(modalities: Mapping[str, Any], *, clip: float | None = None) -> ModalityNormalizers:
    """Pick a normaliser for every modality from its kind.

    ``"continuous"`` and ``"interval"`` -> :class:`ZScoreNormalizer` (with ``clip``), ``"embedding"`` ->
    :class:`L2Normalizer`, ``"discrete"`` and ``"tokens"`` (token ids) -> :class:`IdentityNormalizer`.

    Args:
        modalities: Modality name -> an object with a ``kind`` attribute (``ModalitySpec``, a ``StreamKind``
            holder) or the kind itself as a string.
        clip: Passed to every z-score normaliser.

    Returns:
        Unfitted :class:`ModalityNormalizers`.

    Raises:
        ValueError: for an unknown kind (the message names the modality and the valid kinds).

    Example:
        >>> default_normalizers({"audio": "continuous", "text": "embedding", "pose": "discrete"})
        ModalityNormalizers(audio=ZScoreNormalizer(clip=None, with_mean=True, with_std=True), \
pose=IdentityNormalizer(), text=L2Normalizer(eps=1e-12))
    """
    chosen: dict[str, Normalizer] = {}
    for name, spec in modalities.items():
        kind = _kind_of(spec)
        if kind in ("continuous", "interval"):
            chosen[name] = ZScoreNormalizer(clip=clip)
        elif kind == "embedding":
            chosen[name] = L2Normalizer()
        elif kind in ("discrete", "tokens"):  # token ids are never normalised
            chosen[name] = IdentityNormalizer()
        else:
            raise ValueError(
                f"default_normalizers cannot pick a normaliser for modality {name!r}: its kind must be one of "
                f"{list(MODALITY_KINDS)}. Got {kind!r}."
            )
    return ModalityNormalizers(chosen)


class ModalityNormalizers(Mapping[str, Normalizer]):
    """A mapping modality name -> :class:`Normalizer`, fitted and applied together.

    The modalities are kept in canonical (sorted) order. Every method checks that the data holds exactly the
    modalities it has normalisers for, so a misspelt or forgotten modality is an error instead of a silently
    unnormalised stream. An instance is callable (``norms(record)`` is ``norms.transform_record(record)``),
    so it can be passed to ``MultimodalDataset.with_transform``.

    Args:
        normalizers: Modality name -> normaliser (fitted or not). The normaliser objects are used as given,
            not copied, and :meth:`fit` fits them in place.

    Example:
        >>> import numpy as np
        >>> norms = ModalityNormalizers({"acc": ZScoreNormalizer(), "emb": L2Normalizer()})
        >>> mask = np.array([True, True, False])
        >>> _ = norms.fit_arrays({
        ...     "acc": (np.array([[0.0], [2.0], [np.nan]]), mask),
        ...     "emb": (np.array([[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]]), mask),
        ... })
        >>> out = norms.transform_arrays({"acc": (np.array([[4.0], [1.0]]), None),
        ...                               "emb": (np.array([[0.0, 2.0], [5.0, 5.0]]), np.array([True, False]))})
        >>> out["acc"].ravel().tolist(), out["emb"].tolist()
        ([3.0, 0.0], [[0.0, 1.0], [0.0, 0.0]])
    """

    def __init__(self, normalizers: Mapping[str, Normalizer]) -> None:
        if not isinstance(normalizers, Mapping) or not normalizers:
            raise ValueError(
                "The 'normalizers' parameter of ModalityNormalizers must be a non-empty mapping of modality name "
                f"-> Normalizer. Got {normalizers!r}."
            )
        for name, norm in normalizers.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"ModalityNormalizers needs non-empty string modality names. Got {name!r}.")
            if not isinstance(norm, Normalizer):
                raise TypeError(
                    f"The normaliser for modality {name!r} of ModalityNormalizers must be a Normalizer. "
                    f"Got {type(norm).__name__}."
                )
        self._normalizers: dict[str, Normalizer] = {name: normalizers[name] for name in sorted(normalizers)}

    # ---------------------------------------------------------------------------------------------- mapping
    def __getitem__(self, modality: str) -> Normalizer:
        return self._normalizers[modality]

    def __iter__(self) -> Iterator[str]:
        return iter(self._normalizers)

    def __len__(self) -> int:
        return len(self._normalizers)

    def __repr__(self) -> str:
        inner = ", ".join(f"{m}={n!r}" for m, n in self._normalizers.items())
        return f"ModalityNormalizers({inner})"

    @property
    def modalities(self) -> list[str]:
        """The modality names, sorted."""
        return list(self._normalizers)

    @property
    def is_fitted(self) -> bool:
        """Whether every normaliser is fitted."""
        return all(n.is_fitted for n in self._normalizers.values())

    def _check_keys(self, got: set[str], what: str) -> None:
        expected = set(self._normalizers)
        if got != expected:
            parts = []
            if expected - got:
                parts.append(f"missing {sorted(expected - got)}")
            if got - expected:
                parts.append(f"without a normaliser {sorted(got - expected)}")
            raise DataError(
                f"{what} must hold exactly the modalities of ModalityNormalizers {sorted(expected)}; "
                f"{' and '.join(parts)}."
            )

    @staticmethod
    def _for_modality(modality: str, norm: Normalizer, err: DataError) -> DataError:
        return DataError(f"Modality {modality!r} ({type(norm).__name__}): {err}")

    # ---------------------------------------------------------------------------------------------- fitting
    def fit(self: MN, dataset: StackedSource) -> MN:
        """Fit every normaliser on all steps of ``dataset`` (pass the training view only).

        Args:
            dataset: A ``MultimodalDataset`` view, or any object with ``stacked(modality) -> (values [S, D],
                mask [S])``.

        Returns:
            ``self``.

        Raises:
            DataError: when the data set lacks a modality, or a normaliser refuses its data.
        """
        available = getattr(dataset, "modalities", None)
        if available is not None:
            self._check_keys(set(available), "The data set")
        return self.fit_arrays({m: dataset.stacked(m) for m in self._normalizers})

    def fit_arrays(self: MN, arrays: Mapping[str, tuple[Any, Any]]) -> MN:
        """Fit every normaliser on ``arrays[modality] = (values [S, D], mask [S] or None)``.

        Either every normaliser is fitted or, when one refuses its data, none changes.

        Returns:
            ``self``.

        Raises:
            DataError: when the modalities differ from the normalisers', or a normaliser refuses its data
                (the message names the modality).
        """
        self._check_keys(set(arrays), "The 'arrays' parameter of ModalityNormalizers.fit_arrays")
        states = {}
        for m, norm in self._normalizers.items():
            values, mask = arrays[m]
            fresh = type(norm)(**norm.get_params())
            try:
                fresh.fit(values, mask)
            except DataError as err:
                raise self._for_modality(m, norm, err) from err
            states[m] = fresh.fitted_state()
        for m, (tensors, scalars) in states.items():
            self._normalizers[m].set_fitted_state(tensors, scalars)
        return self

    # ------------------------------------------------------------------------------------------- transforms
    def _map(self, arrays: Mapping[str, tuple[Any, Any]], caller: str, inverse: bool) -> dict[str, Any]:
        self._check_keys(set(arrays), f"The 'arrays' parameter of ModalityNormalizers.{caller}")
        out = {}
        for m, norm in self._normalizers.items():
            values, mask = arrays[m]
            try:
                out[m] = norm.inverse_transform(values, mask) if inverse else norm.transform(values, mask)
            except DataError as err:
                raise self._for_modality(m, norm, err) from err
        return out

    def transform_arrays(self, arrays: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
        """Transform ``arrays[modality] = (values [S, D], mask [S] or None)``; return modality -> values.

        Masks are not returned: they are unchanged, and missing rows of the values are exact zeros.

        Raises:
            NotFittedError: when a normaliser is not fitted.
            DataError: as :meth:`fit_arrays`.
        """
        return self._map(arrays, "transform_arrays", inverse=False)

    def inverse_transform_arrays(self, arrays: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
        """The inverse of :meth:`transform_arrays` (see each normaliser for what it can restore)."""
        return self._map(arrays, "inverse_transform_arrays", inverse=True)

    def transform_record(self, record: R) -> R:
        """Return a copy of a ``SequenceRecord`` with every modality's values normalised.

        The record's masks are copied unchanged; its other fields are shared with the input. Missing steps of
        the new values are exact zeros.

        Args:
            record: An object with ``values`` (modality -> ``[T, D_m]``) and ``masks`` (modality -> ``[T]``)
                attributes, normally :class:`mmfuse.data.SequenceRecord`.

        Raises:
            NotFittedError: when a normaliser is not fitted.
            DataError: when the record's modalities differ from the normalisers', or a normaliser refuses its
                data (the message names the record id and the modality).
        """
        values: Mapping[str, Any] = getattr(record, "values")  # noqa: B009 (typed as a plain object)
        masks: Mapping[str, Any] = getattr(record, "masks")  # noqa: B009
        rec_id = getattr(record, "id", None)
        where = f"Record {rec_id!r}" if rec_id is not None else "The record"
        self._check_keys(set(values), f"{where}.values")
        self._check_keys(set(masks), f"{where}.masks")
        try:
            new_values = self.transform_arrays({m: (values[m], masks[m]) for m in self._normalizers})
        except DataError as err:
            raise DataError(f"{where}: {err}") from err
        new_masks = {m: masks[m] for m in masks}
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            out: R = dataclasses.replace(record, values=new_values, masks=new_masks)
            return out
        result = copy.copy(record)
        setattr(result, "values", new_values)  # noqa: B010
        setattr(result, "masks", new_masks)  # noqa: B010
        return result

    def __call__(self, record: R) -> R:
        """Same as :meth:`transform_record`."""
        return self.transform_record(record)

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``normalizers.json`` and ``normalizers.safetensors`` into ``directory`` (created if needed).

        Each file is replaced atomically, tensors first. Unfitted normalisers are saved as such (parameters
        only).

        Returns:
            The path of ``normalizers.json``.

        Raises:
            ValueError: when a normaliser's class is not registered, or its parameters are not JSON values.
        """
        directory = Path(directory)
        tensors: dict[str, np.ndarray] = {}
        entries: dict[str, Any] = {}
        for m, norm in self._normalizers.items():
            name = normalizer_name(norm)
            params = norm.get_params()
            try:
                json.dumps(params, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"The parameters of the {type(norm).__name__} for modality {m!r} are not plain JSON values "
                    f"({err}); they cannot be saved: {params!r}."
                ) from err
            entry: dict[str, Any] = {"normalizer": name, "params": params, "fitted": norm.is_fitted}
            if norm.is_fitted:
                arrays, scalars = norm.fitted_state()
                entry["state"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in scalars.items()}
                entry["tensors"] = {}
                for attr, value in arrays.items():
                    key = f"{m}/{attr}"
                    tensors[key] = value
                    entry["tensors"][attr] = key
            entries[m] = entry
        blob = safetensors.numpy.save(tensors, metadata={"format": _FORMAT})
        index = {
            "format": _FORMAT,
            "version": _VERSION,
            "tensors_file": TENSORS_NAME,
            "tensors_sha256": hashlib.sha256(blob).hexdigest(),
            "modalities": entries,
        }
        text = json.dumps(index, indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(directory / TENSORS_NAME, blob)
        return atomic_write_text(directory / JSON_NAME, text)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ModalityNormalizers:
        """Rebuild the normalisers saved by :meth:`save` in ``directory``.

        Raises:
            FileNotFoundError: when either file is missing (the message names it).
            DataError: when a file is corrupt or truncated, the two files do not belong together, a normaliser
                name is not registered, or a tensor or field is missing (the message names the file).

        Example:
            >>> import numpy as np, tempfile
            >>> norms = ModalityNormalizers({"acc": ZScoreNormalizer()})
            >>> _ = norms.fit_arrays({"acc": (np.array([[1.0], [3.0]]), None)})
            >>> folder = tempfile.mkdtemp()
            >>> _ = norms.save(folder)
            >>> ModalityNormalizers.load(folder)["acc"].mean_
            array([2.])
        """
        directory = Path(directory)
        json_path = directory / JSON_NAME
        tensors_path = directory / TENSORS_NAME
        if not json_path.is_file():
            raise FileNotFoundError(f"Cannot load normalisers: {json_path} does not exist.")
        try:
            index = json.loads(json_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{json_path} is not a valid JSON file ({err}).") from err
        except RecursionError:
            raise DataError(f"{json_path} is nested too deeply to be an mmfuse normalisers file.") from None
        if not isinstance(index, dict) or index.get("format") != _FORMAT:
            raise DataError(f"{json_path} is not an mmfuse normalisers file (its 'format' is not {_FORMAT!r}).")
        if index.get("version") != _VERSION:
            raise DataError(
                f"{json_path} has format version {index.get('version')!r}; this mmfuse reads version {_VERSION}."
            )
        entries = index.get("modalities")
        if not isinstance(entries, dict) or not entries:
            raise DataError(f"{json_path} has no 'modalities' table.")

        if not tensors_path.is_file():
            raise FileNotFoundError(f"Cannot load normalisers: {tensors_path} (named by {json_path}) does not exist.")
        blob = tensors_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != index.get("tensors_sha256"):
            raise DataError(
                f"{tensors_path} does not match {json_path} (SHA-256 differs): the file is corrupt, truncated or "
                "from another save."
            )
        try:
            tensors = safetensors.numpy.load(blob)
        except Exception as err:  # the Rust error type is not part of safetensors' public API
            raise DataError(f"{tensors_path} is not a readable safetensors file ({err}).") from err

        normalizers: dict[str, Normalizer] = {}
        for m, entry in entries.items():
            where = f"{json_path}, modality {m!r}"
            try:
                name, params, fitted = entry["normalizer"], entry["params"], entry["fitted"]
            except (KeyError, TypeError) as err:
                raise DataError(f"{where}: the entry lacks the field {err}.") from err
            try:
                norm = create_normalizer(name, **params)
            except ValueError as err:
                if name not in list_normalizers():
                    raise DataError(
                        f"{where}: unknown normaliser {name!r}. Registered: {list_normalizers()}. Register custom "
                        "normalisers with @register_normalizer before loading."
                    ) from err
                raise DataError(f"{where}: bad parameters for {name!r} ({err}).") from err
            except TypeError as err:
                raise DataError(f"{where}: bad parameters for {name!r} ({err}).") from err
            if fitted:
                try:
                    refs, state = dict(entry["tensors"]), dict(entry["state"])
                except (KeyError, TypeError, ValueError) as err:
                    raise DataError(f"{where}: a fitted entry needs 'tensors' and 'state' tables ({err}).") from err
                arrays = {}
                for attr in norm.fitted_arrays:
                    key = refs.get(attr)
                    if key not in tensors:
                        raise DataError(f"{where}: the tensor {attr!r} ({key!r}) is missing from {tensors_path}.")
                    arrays[attr] = tensors[key]
                try:
                    norm.set_fitted_state(arrays, state)
                except DataError as err:
                    raise DataError(f"{where}: {err}") from err
            normalizers[m] = norm
        return cls(normalizers)
