"""`mmfuse analyze` shows the runner's progress (its log records), not a bare spinner."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from rich.console import Console

import mmfuse.cli._common as common

RUNNER = logging.getLogger("mmfuse.evaluate.analysis.runner")


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_records_are_shown_and_the_logger_restored(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120)
    monkeypatch.setattr(common, "err_console", console)
    level, propagate = RUNNER.level, RUNNER.propagate
    seen: list[str] = []
    if terminal:  # the status line is redrawn in place: record what it is set to
        monkeypatch.setattr(console, "status", _recording_status(console, seen))
    with common.analysis_progress("runs/x"):
        RUNNER.info("analysis %d/%d %s: %d models", 1, 2, "ablation", 3)
        RUNNER.debug("analysis %d/%d %s: model %d/%d (%s seed %d)", 1, 2, "ablation", 2, 3, "concat", 1)
    assert (RUNNER.level, RUNNER.propagate) == (level, propagate)
    if terminal:  # every model in the status line
        assert seen == ["analysing runs/x: analysis 1/2 ablation: 3 models",
                        "analysing runs/x: analysis 1/2 ablation: model 2/3 (concat seed 1)"]  # fmt: skip
    else:  # one line per analysis in logs
        assert "analysis 1/2 ablation: 3 models (elapsed" in out.getvalue()
        assert "model 2/3" not in out.getvalue()


def _recording_status(console: Console, seen: list[str]) -> Any:
    real = console.status

    def status(text: str) -> Any:
        live = real(text)
        update = live.update

        def record(message: Any, **kwargs: Any) -> None:
            seen.append(message)
            update(message)

        live.update = record  # type: ignore[method-assign, assignment]
        return live

    return status
