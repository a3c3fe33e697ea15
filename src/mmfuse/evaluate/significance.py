"""The significance columns of ``summary.csv``: a confidence interval per fusion and a test against the best baseline.

From the per-item predictions every run saved (:mod:`mmfuse.evaluate.predictions`), for the main metric:

* ``ci_low`` / ``ci_high``: 95 % percentile-bootstrap interval of the metric averaged over seeds, resampling test
  items (the same draw for every seed), :func:`mmfuse.metrics.significance.bootstrap_ci`.
* ``p_vs_best_unimodal``: two-sided paired permutation test of the fusion against the best unimodal baseline on the
  same test items and seeds (seed ``k`` against seed ``k``),
  :func:`mmfuse.metrics.significance.paired_permutation_test`.
* ``vs_best_unimodal``: ``"better"`` / ``"not different"`` / ``"worse"`` at ``alpha = 0.05`` in the metric's
  direction (from the metric registry); ``"reference"`` on the baseline itself.

The best unimodal baseline is chosen on the **validation** split (the main metric computed from the saved validation
predictions, mean over seeds), never on test. Without unimodal rows (``unimodal-<modality>``), or without saved
predictions (a run made before compare saved them), the columns are left empty and a note says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse.errors import DataError
from mmfuse.evaluate.predictions import RunPredictions
from mmfuse.evaluate.protocol import UNIMODAL_PREFIX
from mmfuse.evaluate.rundir import RunDir
from mmfuse.metrics import compute_metric, get_metric
from mmfuse.metrics.significance import ALPHA, bootstrap_ci, paired_permutation_test, verdict

__all__ = ["SIGNIFICANCE_COLUMNS", "Significance", "significance_columns"]

logger = logging.getLogger(__name__)

SIGNIFICANCE_COLUMNS = ("ci_low", "ci_high", "p_vs_best_unimodal", "vs_best_unimodal")
"""The columns :func:`significance_columns` adds to each row of ``summary.csv``."""


@dataclass
class Significance:
    """What :func:`significance_columns` found.

    Attributes:
        columns: fusion -> ``{"ci_low", "ci_high", "p_vs_best_unimodal", "vs_best_unimodal"}``; None where empty.
        reference: The best unimodal baseline (chosen on validation), or None.
        notes: Why some columns are empty.
        settings: How the numbers were computed (recorded in ``run.json`` as ``"significance"``).
    """

    columns: dict[str, dict[str, Any]]
    reference: str | None = None
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _stack(found: Sequence[RunPredictions], with_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``[S, N(, K)]`` predictions and, when asked for and saved, ``[S, N, C]`` probabilities."""
    y_pred = np.stack([p.y_pred for p in found])
    probs = [p.probs for p in found if p.probs is not None]
    return y_pred, np.stack(probs) if with_probs and len(probs) == len(found) else None


def _load(
    run: RunDir, fusions: Sequence[str], seeds: Sequence[int], split: str, notes: list[str]
) -> dict[str, dict[int, RunPredictions]]:
    """Every saved prediction of ``split``, checked to be of the same items with the same targets."""
    loaded: dict[str, dict[int, RunPredictions]] = {}
    first: tuple[str, RunPredictions] | None = None
    missing: list[str] = []
    for fusion in fusions:
        for seed in seeds:
            path = run.predictions_file(fusion, seed, split)
            if not path.is_file():
                missing.append(f"{fusion} seed {seed}")
                continue
            found = run.read_predictions(fusion, seed, split)
            if first is None:
                first = (str(path), found)
            elif found.item_ids != first[1].item_ids or not np.array_equal(found.y_true, first[1].y_true):
                raise DataError(
                    f"The {split} predictions '{path}' are not of the same items and targets as '{first[0]}': every "
                    "run of a comparison is tested on the same items. Delete the file to recompute it."
                )
            loaded.setdefault(fusion, {})[seed] = found
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        notes.append(
            f"No saved per-item {split} predictions for {shown} (a run made before compare saved them): "
            f"{'their confidence intervals and tests are' if split == 'test' else 'the best unimodal baseline is'} "
            "left empty. Rerun the comparison to get them."
        )
    return loaded


def _best_unimodal(
    run: RunDir, baselines: Sequence[str], seeds: Sequence[int], main: str, notes: list[str]
) -> str | None:
    """The unimodal baseline with the best validation main metric (mean over seeds); None when it cannot be told."""
    val = _load(run, baselines, seeds, "val", notes)
    scores: dict[str, float] = {}
    for name in baselines:
        runs = val.get(name, {})
        if len(runs) != len(seeds):
            continue
        values = [compute_metric(main, p.y_true, p.y_pred, p.probs) for p in runs.values()]
        if all(math.isfinite(v) for v in values):
            scores[name] = float(np.mean(values))
    if not scores:
        notes.append(f"No unimodal baseline has a finite validation {main} for every seed: no test against one.")
        return None
    sign = 1.0 if get_metric(main).higher_is_better else -1.0
    return min(sorted(scores), key=lambda name: -sign * scores[name])  # ties: the first name in sorted order


def significance_columns(
    run: RunDir,
    fusions: Sequence[str],
    seeds: Sequence[int],
    main: str,
    *,
    alpha: float = ALPHA,
    confidence_level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Significance:
    """Compute the significance columns of ``summary.csv`` from the saved per-item predictions of a run.

    Args:
        run: The run directory.
        fusions: The rows of the comparison (fusions and ``unimodal-<modality>`` baselines).
        seeds: The seeds every row was trained with.
        main: The main metric (any registered metric computed from predictions).
        alpha: Significance level of the verdict.
        confidence_level: Coverage of the interval.
        n_resamples: Bootstrap replicates and random permutations.
        seed: Seeds the resampling, so the columns are reproducible.

    Returns:
        A :class:`Significance`; every fusion has every column (None where empty).

    Raises:
        DataError: when a saved predictions file is unreadable, inconsistent or of other items than the rest.
    """
    columns: dict[str, dict[str, Any]] = {f: dict.fromkeys(SIGNIFICANCE_COLUMNS) for f in fusions}
    notes: list[str] = []
    settings = {
        "metric": main,
        "interval": f"{confidence_level:.0%} percentile bootstrap over test items pooled over seeds "
        "(scipy.stats.bootstrap)",
        "test": "two-sided paired permutation test over test items, seed k against seed k "
        "(scipy.stats.permutation_test, permutation_type='samples')",
        "reference_chosen_on": "val",
        "alpha": alpha,
        "n_resamples": n_resamples,
        "seed": seed,
        "reference": None,
    }
    seeds = list(seeds)
    test = _load(run, fusions, seeds, "test", notes)
    needs_probs = get_metric(main).needs_probs  # gathering [S, R, N, C] probabilities costs time: only if used
    stacked = {f: _stack([runs[s] for s in seeds], needs_probs) for f, runs in test.items() if len(runs) == len(seeds)}
    y_true = next(iter(next(iter(test.values())).values())).y_true if test else None
    for fusion, (y_pred, probs) in stacked.items():
        low, high = bootstrap_ci(main, y_true, y_pred, probs, confidence_level=confidence_level,
                                 n_resamples=n_resamples, seed=seed)  # fmt: skip
        columns[fusion]["ci_low"], columns[fusion]["ci_high"] = _finite(low), _finite(high)

    baselines = [f for f in fusions if f.startswith(UNIMODAL_PREFIX)]
    if not baselines:
        notes.append("No unimodal baseline in this comparison, so no fusion is tested against one.")
        return Significance(columns, None, notes, settings)
    reference = _best_unimodal(run, baselines, seeds, main, notes)
    settings["reference"] = reference
    if reference is None or reference not in stacked:
        return Significance(columns, reference, notes, settings)
    columns[reference]["vs_best_unimodal"] = "reference"
    ref_pred, ref_probs = stacked[reference]
    for fusion, (y_pred, probs) in stacked.items():
        if fusion == reference:
            continue
        paired = paired_permutation_test(main, y_true, y_pred, ref_pred, probs, ref_probs, n_resamples=n_resamples,
                                         seed=seed)  # fmt: skip
        columns[fusion]["p_vs_best_unimodal"] = _finite(paired.p_value)
        columns[fusion]["vs_best_unimodal"] = verdict(main, paired.difference, paired.p_value, alpha=alpha)
        logger.info("%s vs %s: %s %+.4g, p = %.3g", fusion, reference, main, paired.difference, paired.p_value)
    return Significance(columns, reference, notes, settings)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
