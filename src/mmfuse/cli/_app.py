"""The typer application behind the ``mmfuse`` command: every command is registered here, in one place.

Each command is a plain function in its own module (``_compare.py``, ``_align.py``, ...) that imports only
:mod:`mmfuse.cli._common`, :mod:`mmfuse.cli._options` and the public API. :func:`_command` gives every command the
same error handling (:func:`~mmfuse.cli._common.friendly_errors`) and the same ``--plugin MODULE`` option.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import typer
import typer.core
import typer.models
from pydantic import BaseModel
from rich.markup import escape

from mmfuse.cli._align import align
from mmfuse.cli._analyze import analyze
from mmfuse.cli._catalog import datasets, fusions, version
from mmfuse.cli._common import friendly_errors, install_warning_display, running_experiment
from mmfuse.cli._compare import compare
from mmfuse.cli._experiment import CONFIG_PARAMETER, apply_experiment_file, config_parameter, experiment_schema
from mmfuse.cli._export import export
from mmfuse.cli._extract import extract
from mmfuse.cli._import import IMPORT_HELP, csd, folders, mmsa
from mmfuse.cli._lr_find import lr_find
from mmfuse.cli._options import PluginOption
from mmfuse.cli._report import report
from mmfuse.cli._serve import serve, stream
from mmfuse.cli._train import train
from mmfuse.cli._tune import tune
from mmfuse.plugins import load_entry_points, load_plugins

__all__ = ["app"]


def _without_value(help_option: Any) -> Any:
    """The ``--help`` option showing, like every other flag, no ``<bool>`` value."""
    if help_option is not None:
        help_option.metavar = ""
    return help_option


class _Command(typer.core.TyperCommand):
    """A command whose ``--help`` flag shows no ``<bool>`` value."""

    def get_help_option(self, ctx: Any) -> Any:
        return _without_value(super().get_help_option(ctx))


class _Group(typer.core.TyperGroup):
    """A command group whose ``--help`` flag shows no ``<bool>`` value."""

    def get_help_option(self, ctx: Any) -> Any:
        return _without_value(super().get_help_option(ctx))


app = typer.Typer(
    name="mmfuse",
    help="Multimodal fusion on temporal streams: align, compare fusions, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
import_app = typer.Typer(name="import", help=IMPORT_HELP, no_args_is_help=True, cls=_Group)


def _plain_help(annotation: Any) -> Any:
    """The annotation with its help text shown as written and no ``<bool>`` type beside a flag.

    Help texts are plain text: rich would otherwise read ``[video ids]`` as markup and drop it.
    """
    if get_origin(annotation) is not Annotated:
        return annotation
    base, *extras = get_args(annotation)
    infos = []
    for info in extras:
        if isinstance(info, typer.models.ParameterInfo):
            info = copy.copy(info)
            if info.help:
                info.help = escape(info.help)
            if base is bool and info.metavar is None:
                info.metavar = ""  # a flag takes no value: show none
        infos.append(info)
    return Annotated[(base, *infos)]


_CONTEXT = "mmfuse_click_context"  # the click context typer hands to an experiment command (parameter sources)

EXPERIMENT_SCHEMAS: dict[str, type[BaseModel]] = {}
"""Command name -> the pydantic model of its experiment file (derived from the command's options when registered)."""

CONFIG_HELP = (
    "An experiment file (YAML or JSON): one key per option of this command, named like its parameter (data_dir for "
    "--data-dir); options given on the command line override it, and an unknown key is an error."
)


def _command(func: Callable[..., Any], *, experiment: str | None = None) -> Callable[..., Any]:
    """``func`` with the CLI's error handling and a ``--plugin`` option that is loaded before it runs.

    With ``experiment`` (the command's name), it also gets ``--config FILE``: an experiment file whose keys are the
    command's options (:mod:`mmfuse.cli._experiment`), read before the plug-ins it names are loaded.
    """
    hints = get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    params = [p.replace(annotation=_plain_help(hints[p.name])) for p in signature.parameters.values()]
    params.append(inspect.Parameter("plugin", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=PluginOption))
    options = list(params)
    if experiment is not None:
        EXPERIMENT_SCHEMAS[experiment] = experiment_schema(experiment, options)
        params.append(config_parameter(CONFIG_HELP))
        params.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

    @wraps(func)
    def with_plugins(*args: Any, plugin: list[str] | None = None, **kwargs: Any) -> Any:
        if experiment is None:
            load_plugins(plugin)
            return func(*args, **kwargs)
        path, ctx = kwargs.pop(CONFIG_PARAMETER, None), kwargs.pop(_CONTEXT, None)
        kwargs = apply_experiment_file(experiment, options, path, {**kwargs, "plugin": plugin}, ctx)
        with running_experiment(kwargs):
            load_plugins(kwargs.pop("plugin"))
            return func(*args, **kwargs)

    with_plugins.__signature__ = signature.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    with_plugins.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return friendly_errors(with_plugins)


COMMANDS: dict[str, Callable[..., Any]] = {
    "version": version,
    "datasets": datasets,
    "fusions": fusions,
    "align": align,
    "compare": compare,
    "train": train,
    "tune": tune,
    "lr-find": lr_find,
    "analyze": analyze,
    "report": report,
    "extract": extract,
    "export": export,
    "serve": serve,
    "stream": stream,
}
"""``mmfuse <name>``: the top-level commands, in the order ``mmfuse --help`` lists them."""

EXPERIMENT_COMMANDS: tuple[str, ...] = ("compare", "tune", "analyze")
"""The commands that read an experiment file (``--config``); every option of theirs is a key of it."""

IMPORT_COMMANDS: dict[str, Callable[..., Any]] = {"csd": csd, "mmsa": mmsa, "folders": folders}
"""``mmfuse import <name>``."""

for _name, _func in COMMANDS.items():
    app.command(_name, cls=_Command)(_command(_func, experiment=_name if _name in EXPERIMENT_COMMANDS else None))
for _name, _func in IMPORT_COMMANDS.items():
    import_app.command(_name, cls=_Command)(_command(_func))
app.add_typer(import_app, name="import")


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.call_on_close(install_warning_display())
    load_entry_points()  # installed plug-in packages register their components before any command runs
