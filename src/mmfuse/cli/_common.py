"""What every command module shares: consoles, the error wrapper, warning display, the command line, option parsing.

Command modules import this module and the public API only; ``_app.py`` registers every command in one place.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from pathlib import Path
from typing import Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = [
    "EXIT_USAGE",
    "MAX_WARNINGS",
    "analysis_progress",
    "command_line",
    "console",
    "err_console",
    "error_message",
    "experiment_options",
    "friendly_errors",
    "install_warning_display",
    "overrides",
    "path_text",
    "print_error",
    "running_experiment",
    "show_validation",
    "show_warnings",
    "split_names",
]

EXIT_USAGE = 2
"""The exit code of a command that stopped on an expected error (bad input, a file system or network failure)."""

# Piped or captured output has no terminal width: use a wide one so result tables are never cut.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

F = TypeVar("F", bound=Callable[..., Any])

_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "permission denied; check the folder's permissions or choose another --out",
    errno.EPERM: "operation not permitted; check the folder's permissions",
    errno.ECONNREFUSED: "nothing is listening there; start the server first or check the URL",
    errno.EADDRINUSE: "the address is already in use; choose another --port",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another --out",
}


def error_message(exc: BaseException) -> str:
    """One line saying what went wrong, for an error the CLI stops on.

    The library's own errors (and ``ValueError``) already name the problem and the place and are shown as they
    are; operating-system errors get the failing path and a hint; memory and recursion errors say what to try.

    Example:
        >>> error_message(OSError(28, "No space left on device", "runs/x/results.csv"))
        'No space left on device: runs/x/results.csv (the disk is full; free some space or choose another --out)'
        >>> error_message(MemoryError())
        'out of memory (MemoryError); try a smaller --batch-size, fewer --jobs or a smaller model'
    """
    if isinstance(exc, MemoryError):
        detail = f": {exc}" if str(exc) else ""
        return f"out of memory (MemoryError{detail}); try a smaller --batch-size, fewer --jobs or a smaller model"
    if isinstance(exc, RecursionError):
        return (
            f"the input is nested too deeply to process (RecursionError: {exc}); "
            "check the file for deeply nested or self-referencing structures"
        )
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        if exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        text = f"{exc.strerror}: {where}" if where else exc.strerror
        hint = _OS_HINTS.get(exc.errno)
        return f"{text} ({hint})" if hint else text
    text = str(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return text or type(exc).__name__


def print_error(exc: BaseException) -> None:
    """Print ``error: <one line>`` on stderr.

    ``escape``: a path such as ``data/[run1]/a.csv`` is text, not rich markup; ``soft_wrap``: one line, even when
    stderr is not a terminal (rich would otherwise hard-wrap the message at 80 columns).
    """
    err_console.print(f"[bold red]error:[/] {escape(error_message(exc))}", highlight=False, soft_wrap=True)


def friendly_errors(func: F) -> F:
    """Turn expected errors into one clear ``error:`` line on stderr and exit code 2 (no traceback).

    Expected: the library's errors (:class:`~mmfuse.errors.MmfuseError`), ``ValueError`` (bad input),
    ``OSError`` (missing files, a read-only or full disk, a refused connection), ``MemoryError`` and
    ``RecursionError``. Anything else is a bug and keeps its traceback.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mmfuse.errors import MmfuseError

        try:
            return func(*args, **kwargs)
        except (MmfuseError, ValueError, OSError, MemoryError, RecursionError) as exc:
            print_error(exc)
            raise typer.Exit(code=EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def command_line() -> str:
    """The command as typed (``mmfuse compare ...``), shell-quoted; run directories record it."""
    return " ".join(shlex.quote(a) for a in ["mmfuse", *sys.argv[1:]])


_EXPERIMENT: ContextVar[dict[str, Any] | None] = ContextVar("mmfuse_experiment", default=None)


@contextmanager
def running_experiment(options: dict[str, Any]) -> Iterator[None]:
    """Make ``options`` the running command's options for :func:`experiment_options` (``_app`` sets them)."""
    token = _EXPERIMENT.set(dict(options))
    try:
        yield
    finally:
        _EXPERIMENT.reset(token)


def experiment_options(**resolved: Any) -> dict[str, Any]:
    """The options this command runs with, as its experiment file (``--config``) holds them.

    The command line over the ``--config`` file over the defaults, one key per option; ``resolved`` replaces values
    with what they resolved to (the output folder a default stood for, an absolute path). Paths are written as text.

    Example:
        >>> experiment_options(seeds=2, out=Path("runs/x"))  # outside a command: only what is given
        {'seeds': 2, 'out': 'runs/x'}
    """
    options = dict(_EXPERIMENT.get() or {})
    options.update(resolved)
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def overrides(**values: Any) -> dict[str, Any]:
    """The options given on the command line (not None), by name: what a command lays over a preset.

    Example:
        >>> overrides(hidden=None, lr=0.01)
        {'lr': 0.01}
    """
    return {name: value for name, value in values.items() if value is not None}


def path_text(path: Path | None) -> str | None:
    """A path option as the text a config records (None stays None: the option was not given)."""
    return str(path) if path is not None else None


def split_names(values: list[str] | None) -> list[str]:
    """Names given by repeating an option or comma-separating them (``-e a,b -e c`` -> ``[a, b, c]``)."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


MAX_WARNINGS = 5
"""Warnings printed in full; the rest are counted and left to the report files."""

_shown: set[str] = set()  # texts already printed by the warning display (so a report does not repeat them)


def show_warnings(items: Sequence[str], where: str, *, limit: int = MAX_WARNINGS) -> None:
    """Print the first ``limit`` warnings, one line each, and how many more ``where`` lists.

    A text the warning display already printed (the library warned it and also put it in its report) is not
    printed again.
    """
    items = [t for t in items if t not in _shown]
    for text in items[:limit]:
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
    if len(items) > limit:
        err_console.print(
            f"[yellow]warning:[/] … and {len(items) - limit} more; all {len(items)} are in {escape(where)}",
            highlight=False,
            soft_wrap=True,
        )


def show_validation(report: Any, path: Path) -> None:
    """One row per stream of a :class:`~mmfuse.align.ValidationReport`, the first warnings, and where the rest is."""
    summary = report.summary()
    table = Table(title=f"{len(report.recordings)} recording(s) aligned", title_justify="left")
    for col, justify in (
        ("stream", "left"),
        ("kind", "left"),
        ("D", "right"),
        ("present in", "right"),
        ("coverage %", "right"),
        ("min %", "right"),
        ("interpolated %", "right"),
        ("gaps", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name, s in summary.items():
        table.add_row(
            escape(name),
            "/".join(s["kinds"]),
            "/".join(map(str, s["dims"])) or "-",
            f"{s['present_in']}/{s['recordings']}",
            f"{100 * s['coverage']:.1f}",
            f"{100 * s['min_coverage']:.1f}",
            f"{100 * s['interpolated']:.1f}",
            str(s["gaps"]),
        )
    console.print(table)
    if report.label_coverage:
        steps = sum(int(c["steps"]) for c in report.label_coverage.values())
        labelled = sum(int(c["labelled"]) for c in report.label_coverage.values())
        console.print(f"step labels: {labelled} of {steps} steps labelled ({100 * labelled / max(steps, 1):.1f} %)")
    show_warnings(list(report.errors) + list(report.warnings), str(path / "validation.md"))


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    from mmfuse.errors import MmfuseWarning

    kind = "" if issubclass(category, MmfuseWarning) else f" ({category.__name__})"
    _shown.add(str(message))
    err_console.print(f"[yellow]warning{kind}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def install_warning_display() -> Callable[[], None]:
    """Show Python warnings as one ``warning: ...`` line each on stderr (no source line, no code).

    Returns:
        A function that puts the previous display back (the CLI calls it when the command ends).
    """
    previous = warnings.showwarning
    warnings.showwarning = _show_warning

    def restore() -> None:
        warnings.showwarning = previous

    return restore


class _ProgressHandler(logging.Handler):
    """Shows the analysis runner's progress records from ``level`` up."""

    def __init__(self, show: Callable[[str], None], level: int) -> None:
        super().__init__(level)
        self._show = show

    def emit(self, record: logging.LogRecord) -> None:
        self._show(record.getMessage())


@contextmanager
def analysis_progress(run_dir: str) -> Iterator[None]:
    """Per-analysis, per-model progress of ``analyze_run`` (analyze, compare --analyze), from the runner's logs."""
    runner = logging.getLogger("mmfuse.evaluate.analysis.runner")
    level, propagate = runner.level, runner.propagate
    with contextlib.ExitStack() as stack:
        if err_console.is_terminal:
            status = stack.enter_context(err_console.status(f"analysing {run_dir} ..."))
            # every model of every analysis in the status line
            handler = _ProgressHandler(lambda message: status.update(f"analysing {run_dir}: {message}"), logging.DEBUG)
        else:
            start = time.monotonic()
            handler = _ProgressHandler(
                lambda message: err_console.print(
                    f"{message} (elapsed {time.monotonic() - start:.0f} s)", highlight=False, markup=False
                ),
                logging.INFO,  # logs and CI: one line per analysis, not one per model
            )
        runner.addHandler(handler)
        runner.setLevel(logging.DEBUG)
        runner.propagate = False  # shown here, not a second time by the root handler of --verbose
        try:
            yield
        finally:
            runner.removeHandler(handler)
            runner.setLevel(level)
            runner.propagate = propagate
