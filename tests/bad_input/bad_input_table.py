"""The bad-input table: one :class:`Case` per distinct bad input, kept in the ``CASES`` list of each
``tests/bad_input/test_<surface>.py``, and the generator of ``docs/bad_input.md`` from them.

Each test module parametrises its tests over its own ``CASES``; ``test_doc.py`` checks that the page lists
exactly the cases the tests run, so neither can drift. After adding or changing a case, regenerate the page:
``python tests/bad_input/bad_input_table.py --write``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = [
    "ACCEPTED",
    "Case",
    "align_source",
    "assert_names",
    "clean_failure",
    "collect",
    "invoke",
    "params",
    "render",
    "tree",
    "write_csv",
]

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "bad_input.md"

ACCEPTED = "accepted"
"""The ``error`` of a case whose input is valid: the test checks the result instead."""


@dataclass(frozen=True)
class Case:
    """One bad input (or a tricky valid one) and what must come of it.

    Attributes:
        surface: The entry point it hits (``mmfuse align``, ``open_dataset`` ...); the page groups by it.
        id: Short name, unique within the surface (the pytest id).
        what: The input in words, for the page.
        error: The expected error type (``DataError``, ``exit 2`` for a CLI refusal ...) or :data:`ACCEPTED`.
        names: What the message must contain: the problem and the place (file, sample, column, row ...).
        data: What the surface's test needs to build the input (a function, a dict of changes ...).
    """

    surface: str
    id: str
    what: str
    error: str
    names: tuple[str, ...] = ()
    data: Any = field(default=None, compare=False)

    @property
    def param(self) -> Any:
        """This case as a ``pytest.param`` with its id."""
        return pytest.param(self, id=self.id)


def params(cases: Iterable[Case]) -> list[Any]:
    """The cases as pytest params; duplicate ids within a surface are refused."""
    cases = list(cases)
    seen: set[tuple[str, str]] = set()
    for c in cases:
        key = (c.surface, c.id)
        if key in seen:
            raise ValueError(f"Duplicate bad-input case {key}.")
        seen.add(key)
    return [c.param for c in cases]


def assert_names(message: str, *parts: str) -> None:
    """Every part appears in the message."""
    missing = [p for p in parts if p not in message]
    assert not missing, f"the message lacks {missing}: {message}"


def collect(folder: Path = HERE) -> list[Case]:
    """Every case of every ``test_*.py`` module of the folder (their module-level ``CASES`` lists)."""
    cases: list[Case] = []
    for path in sorted(folder.glob("test_*.py")):
        name = f"_bad_input_table_{path.stem}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        cases.extend(getattr(module, "CASES", []))
    return cases


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _names(names: Sequence[str]) -> str:
    return ", ".join("`" + _cell(n).replace("`", "'") + "`" for n in names)


def render(cases: Sequence[Case]) -> str:
    """The Markdown page: an introduction, then one table per surface (cases in their test order)."""
    surfaces: dict[str, list[Case]] = {}
    for c in cases:
        surfaces.setdefault(c.surface, []).append(c)
    n_bad = sum(c.error != ACCEPTED for c in cases)
    lines = [
        "# Bad input: what mmfuse checks",
        "",
        "Every row is a test case (`tests/bad_input/`): a bad input, or a tricky valid one, driven through a "
        "public entry point. A bad input gets the error in the last column, whose message names the problem and "
        "the place (file, sample, column, row), and nothing half-written is left behind; a CLI refusal is exit "
        "code 2 with one `error:` line and no traceback. *accepted* rows are valid inputs that must give the right "
        "result, not an error.",
        "",
        f"{len(cases)} cases ({n_bad} refused, {len(cases) - n_bad} accepted) over {len(surfaces)} surfaces. This "
        "page is generated from the test tables (`python tests/bad_input/bad_input_table.py --write`) and a test "
        "checks that it lists every case.",
        "",
    ]
    for surface, rows in surfaces.items():
        lines += [f"## {surface}", "", "| case | input | expected | the message names |", "| --- | --- | --- | --- |"]
        lines += [f"| `{c.id}` | {_cell(c.what)} | {_cell(c.error)} | {_names(c.names)} |" for c in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    cases = collect()
    text = render(cases)
    if "--write" in argv:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC} ({len(cases)} cases)")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


# ----------------------------------------------------------------------------------------------------------
# helpers the surfaces' tests share


def invoke(*args: str | Path) -> Any:
    """Run the ``mmfuse`` CLI in-process (typer's CliRunner) with the arguments as strings."""
    from typer.testing import CliRunner

    from mmfuse.cli._app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def clean_failure(result: Any, usage: bool = False) -> str:
    """Exit code 2, exactly one ``error:`` line on stderr and no traceback; returns that line.

    With ``usage`` the refusal is the option parser's (a boxed usage error instead of an ``error:`` line): returns
    the box's text on one line.
    """
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if usage:
        return " ".join(result.stderr.replace("│", " ").split())
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative POSIX path -> bytes): what a refused command must leave unchanged."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_csv(path: Path, t: Any, v: np.ndarray, header: str | None = None) -> None:
    """A stream CSV: a header (``timestamp,x0,x1..`` unless given) and one row per time stamp."""
    head = header or ",".join(["timestamp"] + [f"x{j}" for j in range(v.shape[1])])
    rows = [",".join(repr(float(x)) for x in (ti, *vi)) for ti, vi in zip(t, v, strict=True)]
    path.write_text("\n".join([head, *rows]) + "\n", encoding="utf-8")


def align_source(root: Path) -> Path:
    """``root/src``: recordings r1..r3, each with ``acc.csv`` (10 Hz, 2 features) and ``gyro.npz`` (5 Hz, 1 feature)."""
    src = root / "src"
    rng = np.random.default_rng(0)
    for rec in ("r1", "r2", "r3"):
        d = src / rec
        d.mkdir(parents=True)
        write_csv(d / "acc.csv", np.arange(20) / 10, rng.normal(size=(20, 2)))
        np.savez(d / "gyro.npz", timestamps=np.arange(10) / 5, values=rng.normal(size=(10, 1)))
    (src / "labels.csv").write_text("recording,label\nr1,walk\nr2,run\nr3,walk\n", encoding="utf-8")
    return src
