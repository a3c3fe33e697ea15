"""The terminal progress display of `mmfuse compare`: bars appear with the first event, never empty or stuck."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

import mmfuse.cli._compare as compare_cli
import mmfuse.evaluate.compare as compare_module
from mmfuse.evaluate.compare import CompareProgress


def _run(monkeypatch: pytest.MonkeyPatch, events: list[CompareProgress], error: Exception | None = None) -> str:
    out = io.StringIO()
    monkeypatch.setattr(compare_cli, "err_console", Console(file=out, force_terminal=True, width=100))

    def fake_compare(config: Any, progress: Any) -> str:
        for event in events:
            progress(event)
        if error is not None:
            raise error
        return "result"

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    try:
        assert compare_cli._with_progress_bar(object()) == "result"
    except ValueError:
        assert error is not None
    return out.getvalue()


def test_an_error_before_any_run_prints_no_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _run(monkeypatch, [], ValueError("over --max-params"))
    assert "runs" not in shown and "epochs" not in shown and "0/?" not in shown


def test_runs_in_worker_processes_get_no_epoch_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    # --jobs 2: only the end of each run is reported
    done = [CompareProgress("concat", s, i + 1, 2, logs={"accuracy": 0.5}, done=True) for i, s in enumerate((0, 1))]
    shown = _run(monkeypatch, done)
    assert "2/2" in shown and "last: concat seed 1" in shown
    assert "epochs" not in shown and "0/?" not in shown


def test_epochs_of_the_current_run_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    events = [
        CompareProgress("gated", 0, 1, 1, epoch=e, epochs=3, logs={"val_accuracy": 0.25 * e}) for e in (1, 2, 3)
    ] + [CompareProgress("gated", 0, 1, 1, logs={}, done=True)]
    shown = _run(monkeypatch, events)
    assert "3/3" in shown and "gated seed 0 done" in shown and "1/1" in shown
