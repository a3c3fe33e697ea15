"""The run directory of a comparison as an object: where every file lives, and validated reading of them.

Every writer and reader of a run (``compare``, ``tune``'s trials, the report, the analysis) goes through
:class:`RunDir` instead of writing path literals, so the layout is defined once::

    RUN/
      run.json            what ran: data set, fusions, seeds, resolved settings, preset, versions, times
      config.yaml         the resolved experiment file: `mmfuse compare --config RUN/config.yaml` reruns it
      results.csv         one row per fusion x seed (test metrics, parameters, time, best epoch)
      summary.csv         mean and std per fusion, best first
      summary.md          the comparison in Markdown
      report.html         the self-contained report
      models/<fusion>-seed<k>/   model.safetensors, config.json, normalisers, history, test metrics, result.json
      predictions/<split>/<fusion>-seed<k>.safetensors   per-item val/test predictions of each run's best model
      analysis/           written by `mmfuse analyze` (tables, figures, sections.json, summary.md)
      final_results.csv   written by `mmfuse analyze` (every metric per run)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import pandas as pd

from mmfuse._io import atomic_write_csv, atomic_write_json, atomic_write_yaml, read_settings_file
from mmfuse.errors import DataError
from mmfuse.evaluate.predictions import RunPredictions, read_predictions, write_predictions

__all__ = ["RunDir"]

_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")

_SEED_DIR = re.compile(r"^(?P<fusion>.+)-seed(?P<seed>\d+)$")


class _Place:
    """One file or folder of the layout, ``RUN/<name>``: read on a :class:`RunDir`, it is that path.

    Declaring each place as one line of the class keeps the layout a table: the name and what it holds.
    """

    def __init__(self, name: str, holds: str, *, folder: bool = False) -> None:
        self.name = name
        self.__doc__ = f"``{name}{'/' if folder else ''}``: {holds}"

    @overload
    def __get__(self, run: None, owner: type[RunDir]) -> _Place: ...

    @overload
    def __get__(self, run: RunDir, owner: type[RunDir]) -> Path: ...

    def __get__(self, run: RunDir | None, owner: type[RunDir]) -> Path | _Place:
        return self if run is None else run.path / self.name


class RunDir:
    """One comparison's run directory (it need not exist yet).

    Args:
        path: The directory.

    Example:
        >>> run = RunDir("runs/bm")
        >>> run.model_dir("concat", 0).as_posix(), run.results_csv.name
        ('runs/bm/models/concat-seed0', 'results.csv')
    """

    RUN_JSON = "run.json"
    CONFIG_YAML = "config.yaml"
    RESULTS_CSV = "results.csv"
    SUMMARY_CSV = "summary.csv"
    SUMMARY_MD = "summary.md"
    REPORT_HTML = "report.html"
    MODELS_DIR = "models"
    ANALYSIS_DIR = "analysis"
    FINAL_RESULTS_CSV = "final_results.csv"
    NORMALIZERS_DIR = "normalizers"
    RESULT_JSON = "result.json"
    HISTORY_JSON = "history.json"
    TEST_METRICS_JSON = "test_metrics.json"
    PREDICTIONS_DIR = "predictions"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._aside: Path | None = None  # the previous run, moved aside by prepare(overwrite=True)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # ------------------------------------------------------------------------------------------- the layout
    run_json = _Place(RUN_JSON, "what ran and how.")
    config_yaml = _Place(CONFIG_YAML, "the resolved experiment file that reruns the comparison.")
    results_csv = _Place(RESULTS_CSV, "one row per fusion x seed.")
    summary_csv = _Place(SUMMARY_CSV, "mean and std per fusion.")
    summary_md = _Place(SUMMARY_MD, "the comparison in Markdown.")
    report_html = _Place(REPORT_HTML, "the report.")
    models_dir = _Place(MODELS_DIR, "one model directory per fusion x seed.", folder=True)
    analysis_dir = _Place(ANALYSIS_DIR, "what ``mmfuse analyze`` writes.", folder=True)
    final_results_csv = _Place(FINAL_RESULTS_CSV, "every metric per run, written by the analysis.")
    normalizers_dir = _Place(NORMALIZERS_DIR, "fitted normalisers for worker processes (``--jobs``).", folder=True)
    predictions_dir = _Place(PREDICTIONS_DIR, "per-item predictions of each run's best model, by split.", folder=True)

    def model_dir(self, fusion: str, seed: int) -> Path:
        """``models/<fusion>-seed<seed>/``."""
        return self.models_dir / f"{fusion}-seed{int(seed)}"

    def result_json(self, fusion: str, seed: int) -> Path:
        """``models/<fusion>-seed<seed>/result.json``: the results row of a finished run."""
        return self.model_dir(fusion, seed) / self.RESULT_JSON

    def predictions_file(self, fusion: str, seed: int, split: str = "test") -> Path:
        """``predictions/<split>/<fusion>-seed<seed>.safetensors``.

        Example:
            >>> RunDir("runs/bm").predictions_file("concat", 1).as_posix()
            'runs/bm/predictions/test/concat-seed1.safetensors'
        """
        return self.predictions_dir / split / f"{fusion}-seed{int(seed)}.safetensors"

    def read_predictions(self, fusion: str, seed: int, split: str = "test") -> RunPredictions:
        """Return one run's per-item predictions on ``split`` (:func:`~mmfuse.evaluate.predictions.read_predictions`).

        Raises:
            DataError: when the file is missing, of another run, or its arrays do not fit together (named).
        """
        return read_predictions(self.predictions_file(fusion, seed, split), fusion=fusion, seed=seed, split=split)

    def write_predictions(self, fusion: str, seed: int, split: str, predictions: RunPredictions) -> Path:
        """Write one run's per-item predictions on ``split`` atomically (safetensors + item ids as metadata)."""
        return write_predictions(
            self.predictions_file(fusion, seed, split), predictions, fusion=fusion, seed=seed, split=split
        )

    # ------------------------------------------------------------------------------------------------ state
    def exists(self) -> bool:
        """Whether the directory exists and holds anything."""
        return self.path.is_dir() and any(self.path.iterdir())

    def is_run(self) -> bool:
        """Whether the directory holds a ``run.json`` (a comparison was started here)."""
        return self.run_json.is_file()

    def runs(self) -> list[tuple[str, int]]:
        """The ``(fusion, seed)`` of every model directory, in ``run.json``'s fusion order, then by seed.

        Example:
            >>> RunDir("no/such/run").runs()
            []
        """
        if not self.models_dir.is_dir():
            return []
        found: list[tuple[str, int]] = []
        for child in self.models_dir.iterdir():
            match = _SEED_DIR.match(child.name)
            if child.is_dir() and match:
                found.append((match["fusion"], int(match["seed"])))
        order: list[str] = []
        if self.is_run():
            fusions = self.read_meta().get("fusions")
            order = [str(f) for f in fusions] if isinstance(fusions, list) else []
        rank = {name: i for i, name in enumerate(order)}
        return sorted(found, key=lambda fs: (rank.get(fs[0], len(rank)), fs[0], fs[1]))

    # ---------------------------------------------------------------------------------------------- reading
    def _require(self, path: Path, what: str) -> None:
        if not self.path.is_dir():
            raise DataError(f"The run directory '{self.path}' does not exist or is not a directory.")
        if not path.is_file():
            raise DataError(
                f"The {what} '{path}' of the run does not exist. Pass a directory `mmfuse compare` wrote "
                f"(it holds {self.RUN_JSON} and {self.RESULTS_CSV})."
            )

    def read_meta(self) -> dict[str, Any]:
        """Return ``run.json`` as a dict.

        Raises:
            DataError: when it is missing, not JSON or not a JSON object (the file is named).
        """
        self._require(self.run_json, "run description")
        return _read_json_object(self.run_json, "run description")

    def read_results(self) -> pd.DataFrame:
        """Return ``results.csv``: ``fusion`` as text, ``seed`` as int, one row per run.

        Raises:
            DataError: when it is missing, empty, unparsable, lacks ``fusion``/``seed`` or has a non-integer seed.
        """
        path = self.results_csv
        self._require(path, "results table")
        try:
            # Fusion names are user input: read them verbatim ("NA" or "1" must stay a name, not NaN or an int).
            results = pd.read_csv(path, converters={"fusion": str})
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"The results table '{path}' is empty: it has no header and no rows.") from exc
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"The results table '{path}' could not be parsed as CSV: {exc}.") from exc
        missing = [c for c in ("fusion", "seed") if c not in results.columns]
        if missing:
            raise DataError(
                f"The results table '{path}' must have the columns 'fusion' and 'seed'. "
                f"Got the columns {list(results.columns)} instead."
            )
        if results.empty:
            raise DataError(f"The results table '{path}' has a header but no rows: the compare run recorded nothing.")
        results["fusion"] = results["fusion"].astype(str)
        seeds = pd.to_numeric(results["seed"], errors="coerce")
        if seeds.isna().any() or (seeds != seeds.round()).any():
            raise DataError(
                f"The 'seed' column of the results table '{path}' must hold integers. Got {results['seed'].tolist()}."
            )
        results["seed"] = seeds.astype(int)
        return results

    def read_result(self, fusion: str, seed: int, *, metrics: Sequence[str] = ()) -> dict[str, Any]:
        """Return the ``result.json`` of one finished run (NaN where it holds null).

        Args:
            fusion: The run's fusion.
            seed: The run's seed.
            metrics: Columns the row must hold, each a finite number or null (a metric that could not be
                computed is written as null and read back as NaN).

        Raises:
            DataError: when it is missing, not JSON, not a row of this fusion and seed, or lacks one of
                ``metrics`` or holds something else than a finite number or null there (the file is named).
        """
        path = self.result_json(fusion, seed)
        if not path.is_file():
            raise DataError(f"The run {fusion} seed {seed} has no '{path}'.")
        row = _read_json_object(path, "run result")
        if row.get("fusion") != fusion or row.get("seed") != seed:
            raise DataError(
                f"The run result '{path}' belongs to fusion {row.get('fusion')!r} seed {row.get('seed')!r}, not to "
                f"{fusion!r} seed {seed}: the file was moved or edited."
            )
        missing = [m for m in metrics if m not in row]
        if missing:
            raise DataError(f"The run result '{path}' lacks the column(s) {missing} this run records.")
        for name in metrics:
            value = row[name]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and math.isfinite(value)):
                raise DataError(
                    f"The run result '{path}' holds {value!r} for {name!r}; expected a finite number or null."
                )
        return {k: (float("nan") if v is None else v) for k, v in row.items()}

    # ---------------------------------------------------------------------------------------------- writing
    def write_meta(self, meta: Mapping[str, Any]) -> Path:
        """Write ``run.json`` atomically."""
        return atomic_write_json(self.run_json, dict(meta))

    def write_config(self, experiment: Mapping[str, Any]) -> Path:
        """Write ``config.yaml`` atomically: the experiment file that reruns the comparison."""
        return atomic_write_yaml(
            self.config_yaml,
            experiment,
            header="The resolved experiment of this run directory (written by mmfuse compare).\n"
            "Rerun it with: mmfuse compare --config config.yaml --out NEW_DIR",
        )

    def read_config(self) -> dict[str, Any]:
        """Return ``config.yaml`` as a dict.

        Raises:
            DataError: when it is missing; ValueError when it is not YAML or not a mapping (the file is named).
        """
        self._require(self.config_yaml, "experiment file")
        return read_settings_file(self.config_yaml, "experiment file")

    def write_results(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write ``results.csv`` atomically."""
        return atomic_write_csv(self.results_csv, rows)

    def write_summary(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write ``summary.csv`` atomically."""
        return atomic_write_csv(self.summary_csv, rows)

    def write_result(self, fusion: str, seed: int, row: Mapping[str, Any]) -> Path:
        """Write the ``result.json`` of a finished run atomically (the marker ``--resume`` reuses)."""
        return atomic_write_json(self.result_json(fusion, seed), dict(row))

    # ----------------------------------------------------------------------------------- starting a new run
    def check_ready(self, *, resume: bool = False, overwrite: bool = False) -> None:
        """Raise what :meth:`prepare` would raise, without touching the file system.

        ``compare`` calls it first, so a refused run directory costs no data loading; :meth:`prepare` calls it
        again once every setting of the new run has been validated.

        Raises:
            FileExistsError: an existing non-empty directory without ``resume`` or ``overwrite``.
            NotADirectoryError: the path is a file.
            DataError: ``resume`` on a non-empty directory that holds no ``run.json`` (not a run directory).
            ValueError: both ``resume`` and ``overwrite``.

        Example:
            >>> RunDir("no/such/run").check_ready()  # a missing directory is ready
        """
        if resume and overwrite:
            raise ValueError("Choose one of resume (continue the run in the directory) and overwrite (replace it).")
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"The run directory '{self.path}' exists and is a file, not a directory.")
        if not self.exists():
            return
        if resume:
            if not self.is_run():
                raise DataError(
                    f"Cannot resume in '{self.path}': it holds files but no {self.RUN_JSON}, so it is not a run "
                    "directory `mmfuse compare` started. Choose another --out, or --overwrite to replace it."
                )
            return
        if not overwrite:
            what = "a run" if self.is_run() else "files"
            raise FileExistsError(
                f"The run directory '{self.path}' already holds {what}. A run directory holds one run: pass "
                "--resume to continue it, --overwrite to replace it, or another --out."
            )

    def prepare(self, *, resume: bool = False, overwrite: bool = False) -> RunDir:
        """Make the directory ready for a new run: one run directory holds one run.

        * A missing or empty directory is created.
        * ``resume``: an existing run directory is kept as it is (the caller checks what it reuses), less the
          temporary files of an atomic write that a killed run left behind (``.NAME.XXXXXXXX.tmp``).
        * ``overwrite``: an existing directory is moved aside, the new run starts in an empty one, and the old
          one is deleted only by :meth:`commit` once the new run has finished; a failed run restores it with
          :meth:`rollback`.
        * Otherwise an existing, non-empty directory is refused.

        Raises:
            FileExistsError: an existing non-empty directory without ``resume`` or ``overwrite``.
            NotADirectoryError: the path is a file.
            DataError: ``resume`` on a non-empty directory that is not a run directory.
            ValueError: both ``resume`` and ``overwrite``.
        """
        self.check_ready(resume=resume, overwrite=overwrite)
        self._aside = None
        if resume:
            self.remove_partial_files()
        if overwrite and self.exists():
            self._aside = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, self._aside)
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def remove_partial_files(self) -> list[Path]:
        """Delete the temporary files of :func:`mmfuse._io.atomic_write` that a killed run left in the directory.

        An atomic write fills ``.NAME.XXXXXXXX.tmp`` beside its target and renames it; a process killed before
        the rename leaves it. Nothing reads these files; a resumed run deletes them so they never end in the
        finished run directory.

        Returns:
            The deleted files.

        Example:
            >>> import tempfile, pathlib
            >>> d = pathlib.Path(tempfile.mkdtemp())
            >>> _ = (d / ".history.json.ab12cd_3.tmp").write_text("{")
            >>> [p.name for p in RunDir(d).remove_partial_files()], sorted(d.iterdir())
            (['.history.json.ab12cd_3.tmp'], [])
        """
        if not self.path.is_dir():
            return []
        partial = sorted(p for p in self.path.rglob(".*.tmp") if p.is_file() and _PARTIAL.match(p.name))
        for p in partial:
            p.unlink(missing_ok=True)
        return partial

    def discard_unfinished(self) -> list[Path]:
        """Delete the model directories of unfinished runs (no ``result.json``); all of it when none finished.

        ``compare`` calls it when a new run directory cannot be written (a full or read-only disk), so no half
        model is left behind. It is never used on a resumed or overwritten run directory, whose unfinished runs
        may be continued.

        Returns:
            What was deleted.

        Example:
            >>> import tempfile, pathlib
            >>> run = RunDir(pathlib.Path(tempfile.mkdtemp()) / "run")
            >>> (run.model_dir("concat", 0) / "last").mkdir(parents=True)
            >>> [p.name for p in run.discard_unfinished()], run.path.exists()
            (['run'], False)
        """
        if not self.path.is_dir():
            return []
        runs = self.runs()  # lists models/ and reads run.json: once
        unfinished = [self.model_dir(f, s) for f, s in runs if not self.result_json(f, s).is_file()]
        if len(unfinished) == len(runs):
            shutil.rmtree(self.path, ignore_errors=True)
            return [self.path]
        for d in unfinished:
            shutil.rmtree(d, ignore_errors=True)
        return unfinished

    def stale_asides(self) -> list[Path]:
        """Earlier runs that an interrupted ``overwrite`` left moved aside beside the directory (``.NAME.old-*``).

        Example:
            >>> RunDir("no/such/run").stale_asides()
            []
        """
        parent = self.path.parent
        if not parent.is_dir():
            return []
        return sorted(p for p in parent.glob(f".{self.path.name}.old-*") if p.is_dir() and p != self._aside)

    def commit(self) -> None:
        """Delete what :meth:`prepare` moved aside for ``overwrite`` (the new run is complete).

        Earlier runs that an interrupted overwrite of the same directory left aside go too: the user asked for
        the directory to be replaced.
        """
        aside = self._aside
        if aside is not None:
            for old in [aside, *self.stale_asides()]:
                shutil.rmtree(old, ignore_errors=True)
            self._aside = None

    def rollback(self) -> None:
        """Put back the directory :meth:`prepare` moved aside, dropping the failed new run; without one, no-op."""
        aside = self._aside
        if aside is not None and aside.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(aside, self.path)
            self._aside = None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise DataError(f"The {what} '{path}' is not valid JSON: it is nested too deeply.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"The {what} '{path}' is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise DataError(f"The {what} '{path}' must hold a JSON object. Got a {type(data).__name__} instead.")
    return data
