"""Experiment files: ``mmfuse compare|tune|analyze --config EXP.yaml``.

A command's signature is the one place its options are declared. The schema of its experiment file is derived from
it: one key per option (and argument), named like the option's parameter (``--data-dir`` -> ``data_dir``), typed and
bounded like it (a pydantic model built from the annotation and typer's ``min``/``max``). An option added to a command
is therefore a key of its experiment file at once.

Precedence: an option given on the command line wins over the file, the file wins over the option's default (click's
parameter source tells which options were given). An unknown key is an error that lists the valid ones. The options a
command finally runs with are its *resolved experiment* (:func:`mmfuse.cli._common.experiment_options`), which
``compare`` writes into its run directory as ``config.yaml``.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import typer
import typer.models
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from mmfuse._io import read_settings_file

__all__ = [
    "CONFIG_PARAMETER",
    "INLINE_MAPPINGS",
    "apply_experiment_file",
    "config_parameter",
    "experiment_schema",
    "read_experiment",
]

CONFIG_PARAMETER = "config"
"""The name of the ``--config FILE`` parameter every experiment command gets (it is not a key of the file)."""

INLINE_MAPPINGS: dict[str, Any] = {"preset": dict[str, Any]}
"""Keys whose value in a file may also be written inline as a mapping (a preset instead of a preset file's path)."""

_FILE_SOURCES = ("DEFAULT", "DEFAULT_MAP")  # click's ParameterSource names of an option the command line did not give


def _as_list(value: Any) -> Any:
    """A single name for a list option: ``fusion: concat`` means ``fusion: [concat]``."""
    return [value] if isinstance(value, str) else value


def _is_list(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return any(get_origin(a) is list for a in options)


def _field(name: str, annotation: Any, default: Any) -> tuple[Any, Any]:
    """The pydantic field of one command parameter: its type, typer's bounds, and its default (not validated)."""
    base: Any = annotation
    infos: tuple[Any, ...] = ()
    if get_origin(annotation) is Annotated:
        base, *rest = get_args(annotation)
        infos = tuple(rest)
    info = next((i for i in infos if isinstance(i, typer.models.ParameterInfo)), None)
    bounds: dict[str, Any] = {}
    if info is not None:
        if getattr(info, "min", None) is not None:
            bounds["ge"] = info.min
        if getattr(info, "max", None) is not None:
            bounds["le"] = info.max
    if name in INLINE_MAPPINGS:
        base = base | INLINE_MAPPINGS[name]
    metadata: list[Any] = [Field(**bounds)] if bounds else []
    if _is_list(base):
        metadata.append(BeforeValidator(_as_list))
    typed = Annotated[(base, *metadata)] if metadata else base
    return typed, (None if default is inspect.Parameter.empty else default)


_SCHEMAS: dict[tuple[str, tuple[str, ...]], type[BaseModel]] = {}


def experiment_schema(command: str, parameters: Sequence[inspect.Parameter]) -> type[BaseModel]:
    """The pydantic model of ``command``'s experiment file, one field per parameter (``--config`` excluded).

    Unknown keys are forbidden; every field is optional in a file (a file gives what it wants to set).
    """
    names = tuple(p.name for p in parameters if p.name != CONFIG_PARAMETER)
    key = (command, names)
    if key not in _SCHEMAS:
        fields = {p.name: _field(p.name, p.annotation, p.default) for p in parameters if p.name != CONFIG_PARAMETER}
        _SCHEMAS[key] = create_model(  # type: ignore[call-overload]
            f"{command.title().replace('-', '')}Experiment",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=False),
            **fields,
        )
    return _SCHEMAS[key]


def read_experiment(path: str | Path, command: str, parameters: Sequence[inspect.Parameter]) -> dict[str, Any]:
    """Read and validate an experiment file: the keys it sets, with values of the option's type.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it cannot be parsed, holds an unknown key (the valid ones are listed, with the nearest), or a
            value of the wrong type or out of bounds (the key, what was expected and what came).
    """
    data = read_settings_file(path, f"experiment file of 'mmfuse {command}'")
    schema = experiment_schema(command, parameters)
    valid = list(schema.model_fields)
    unknown = [str(k) for k in data if k not in valid]
    if unknown:
        hints = [
            f"{k!r} (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(k, valid, 1)) else repr(k)
            for k in unknown
        ]
        raise ValueError(
            f"The experiment file '{path}' of 'mmfuse {command}' has unknown key(s) {', '.join(hints)}. "
            f"Valid keys: {', '.join(valid)}."
        )
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][:1])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ValueError(
            f"The experiment file '{path}' of 'mmfuse {command}' has invalid values: {problems}."
        ) from None
    return {name: getattr(model, name) for name in valid if name in model.model_fields_set}


def apply_experiment_file(
    command: str,
    parameters: Sequence[inspect.Parameter],
    path: str | Path | None,
    values: Mapping[str, Any],
    ctx: typer.Context | None,
) -> dict[str, Any]:
    """The values the command runs with: the command line over the file over the defaults.

    ``values`` are what click parsed (defaults included); a key of the file replaces the value of every option that
    ``ctx`` says was not given on the command line (without a context, every key of the file does).
    """
    merged = dict(values)
    if path is not None:
        for key, value in read_experiment(path, command, parameters).items():
            source = ctx.get_parameter_source(key) if ctx is not None else None
            if source is None or source.name in _FILE_SOURCES:
                merged[key] = value
    return merged


def config_parameter(help_text: str) -> inspect.Parameter:
    """The ``--config FILE`` parameter an experiment command gets."""
    option = typer.Option("--config", help=help_text)
    return inspect.Parameter(
        CONFIG_PARAMETER, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, option]
    )
