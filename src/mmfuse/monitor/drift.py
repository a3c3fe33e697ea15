"""Drift monitoring: reference statistics from training data, windowed two-sample tests, alerts.

Functional core (pure functions on arrays): :func:`ks_test` (per-feature two-sample Kolmogorov-Smirnov),
:func:`mmd2` / :func:`mmd_test` (maximum mean discrepancy with an RBF kernel, permutation p-value) and
:func:`adjust_pvalues` (Holm, Bonferroni or Benjamini-Hochberg). Stateful shell: :class:`ReferenceStats` (fitted
on training data, saved as safetensors + JSON) and :class:`DriftMonitor`, which keeps a window of recent
steps per modality and tests it against the reference.

One check is one family of tests: every feature of every modality (KS) and every embedding (MMD). The
correction keeps the chance of any false alert per check at ``alpha`` (Holm, Bonferroni) or the expected share
of false discoveries at ``alpha`` (BH). The tests assume independent samples; consecutive steps of a stream are
correlated, which makes a window look more different than it is. ``stride`` keeps every k-th step to thin the
correlation out; choose it around the autocorrelation length of the features.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy import stats

from mmfuse._io import atomic_write, atomic_write_json, json_fields
from mmfuse.errors import DataError, NotFittedError

__all__ = [
    "CORRECTIONS",
    "DriftMonitor",
    "DriftReport",
    "ReferenceStats",
    "adjust_pvalues",
    "ks_test",
    "median_bandwidth",
    "mmd2",
    "mmd_test",
]

logger = logging.getLogger(__name__)

CORRECTIONS = ("holm", "bonferroni", "bh")
"""Multiple-testing corrections :func:`adjust_pvalues` knows."""


def _as_2d(x: Any, name: str, owner: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"The {name!r} parameter of {owner} must be [S, D]. Got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"The {name!r} parameter of {owner} must be finite (drop missing rows first).")
    return a


def ks_test(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample Kolmogorov-Smirnov test of every feature (column), vectorised.

    Args:
        reference: ``[N, D]`` reference samples.
        current: ``[K, D]`` recent samples.

    Returns:
        ``(statistic [D], p-value [D])`` (asymptotic p-values).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> _, p = ks_test(rng.normal(size=(500, 2)), rng.normal([0.0, 1.0], size=(200, 2)))
        >>> bool(p[0] > 0.01), bool(p[1] < 1e-6)
        (True, True)
    """
    ref = _as_2d(reference, "reference", "ks_test")
    cur = _as_2d(current, "current", "ks_test")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"ks_test needs the same D: reference has {ref.shape[1]}, current {cur.shape[1]}.")
    if ref.shape[0] < 1 or cur.shape[0] < 1:
        raise ValueError("ks_test needs at least one sample on each side.")
    res = stats.ks_2samp(ref, cur, axis=0, method="asymp")
    return np.atleast_1d(res.statistic).astype(np.float64), np.atleast_1d(res.pvalue).astype(np.float64)


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T  # [n, m]
    return np.maximum(d, 0.0)


def median_bandwidth(x: Any) -> float:
    """The median heuristic: median pairwise distance of the rows of ``x`` (1.0 when it is 0)."""
    a = _as_2d(x, "x", "median_bandwidth")
    d = np.sqrt(_sq_dists(a, a)[np.triu_indices(a.shape[0], k=1)])
    med = float(np.median(d)) if d.size else 0.0
    return med if med > 0 else 1.0


def mmd2(x: Any, y: Any, bandwidth: float) -> float:
    """Unbiased squared maximum mean discrepancy between the rows of ``x`` and ``y`` with an RBF kernel.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(size=(100, 3)), rng.normal(size=(100, 3))
        >>> abs(mmd2(a, b, 1.0)) < 0.05, mmd2(a, b + 2.0, 1.0) > 0.2
        (True, True)
    """
    a, b = _as_2d(x, "x", "mmd2"), _as_2d(y, "y", "mmd2")
    return float(_mmd2_from_kernel(_kernel(np.vstack([a, b]), bandwidth), a.shape[0])[0])


def _kernel(z: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-_sq_dists(z, z) / (2.0 * bandwidth**2))  # [n + m, n + m]


def _mmd2_from_kernel(k: np.ndarray, n: int, perms: np.ndarray | None = None) -> np.ndarray:
    """Unbiased MMD² for the split "first n rows vs the rest", for the identity and each row of ``perms``."""
    total = k.shape[0]
    m = total - n
    orders = np.arange(total)[None, :] if perms is None else np.vstack([np.arange(total), perms])  # [P, N]
    side = np.zeros(orders.shape, dtype=np.float64)
    rows = np.arange(orders.shape[0])[:, None]
    side[rows, orders[:, :n]] = 1.0  # [P, N] 1 = in x
    kd = k - np.diag(np.diag(k))  # zero the diagonal (unbiased estimate)
    sx = np.einsum("pi,ij,pj->p", side, kd, side)
    sy = np.einsum("pi,ij,pj->p", 1 - side, kd, 1 - side)
    sxy = np.einsum("pi,ij,pj->p", side, k, 1 - side)
    return sx / (n * (n - 1)) + sy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd_test(
    x: Any, y: Any, *, bandwidth: float | None = None, n_permutations: int = 200, seed: int = 0
) -> tuple[float, float]:
    """MMD² with a permutation p-value (a Pearson type III fit to the permutation distribution's moments).

    Args:
        x: ``[N, E]`` reference embeddings.
        y: ``[K, E]`` recent embeddings.
        bandwidth: RBF bandwidth (default: the median heuristic on ``x``).
        n_permutations: Random relabellings.
        seed: Seed of the permutations.

    Returns:
        ``(mmd2, p-value)``.
    """
    a, b = _as_2d(x, "x", "mmd_test"), _as_2d(y, "y", "mmd_test")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("mmd_test needs at least two samples on each side.")
    bw = median_bandwidth(a) if bandwidth is None else float(bandwidth)
    k = _kernel(np.vstack([a, b]), bw)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_permutations, k.shape[0])), axis=1)  # [P, N + K]
    values = _mmd2_from_kernel(k, a.shape[0], perms)
    observed, null = float(values[0]), values[1:]
    return observed, _tail_pvalue(observed, null)


def _tail_pvalue(observed: float, null: np.ndarray) -> float:
    """P(null >= observed) from a Pearson type III fit to the null samples' mean, spread and skewness.

    Permutation counts alone cannot resolve p-values below ``1 / (P + 1)``, which a multiple-testing correction
    over many tests needs; the moment fit extrapolates the tail smoothly.
    """
    mu, sd = float(null.mean()), float(null.std())
    if sd <= 0:
        return 1.0 if observed <= mu else 0.0
    skew = float(stats.skew(null))
    return float(stats.pearson3.sf(observed, max(skew, 1e-6), loc=mu, scale=sd))


def adjust_pvalues(pvalues: Any, method: str = "holm") -> np.ndarray:
    """Adjusted p-values for a family of tests (reject where adjusted <= alpha).

    Example:
        >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(3).tolist()
        [0.03, 0.06, 0.06]
        >>> adjust_pvalues([0.01, 0.04, 0.03], "bh").round(3).tolist()
        [0.03, 0.04, 0.04]
    """
    if method not in CORRECTIONS:
        raise ValueError(f"Unknown correction {method!r}. Valid names: {', '.join(CORRECTIONS)}.")
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    n = p.size
    if n == 0:
        return p
    if method == "bonferroni":
        return np.minimum(p * n, 1.0)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(ranked * (n - np.arange(n)))
    else:  # Benjamini-Hochberg
        adj = np.minimum.accumulate((ranked * n / np.arange(1, n + 1))[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


class ReferenceStats:
    """Reference samples of the training data, per modality (and per embedding), for drift tests.

    Keeps at most ``max_samples`` present rows per modality (a seeded random subset) and the median-heuristic
    bandwidth of each embedding.

    Args:
        max_samples: Rows kept per modality / embedding.
        seed: Seed of the subsampling.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ref = ReferenceStats(max_samples=100).fit({"acc": rng.normal(size=(500, 3))})
        >>> ref.samples_["acc"].shape, ref.n_seen_["acc"]
        ((100, 3), 500)
    """

    def __init__(self, *, max_samples: int = 2000, seed: int = 0) -> None:
        if not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(
                f"The 'max_samples' parameter of ReferenceStats must be an integer >= 2. Got {max_samples!r}."
            )
        self.max_samples = max_samples
        self.seed = seed

    def fit(
        self,
        values: Mapping[str, Any],
        masks: Mapping[str, Any] | None = None,
        embeddings: Mapping[str, Any] | None = None,
    ) -> ReferenceStats:
        """Keep reference rows of ``values[m]`` ``[S, D_m]`` and ``embeddings[name]`` ``[S, E]``.

        Rows where ``masks[m]`` ``[S]`` is False are left out.

        Raises:
            ValueError: no modality, non-finite present rows, or a modality with fewer than two present rows.
        """
        if not values:
            raise ValueError("ReferenceStats.fit needs at least one modality.")
        rng = np.random.default_rng(self.seed)
        self.samples_: dict[str, np.ndarray] = {}
        self.embeddings_: dict[str, np.ndarray] = {}
        self.bandwidths_: dict[str, float] = {}
        self.n_seen_: dict[str, int] = {}
        for m in sorted(values):
            x = np.asarray(values[m], dtype=np.float64)
            if x.ndim == 1:
                x = x[:, None]
            if masks is not None and m in masks:
                x = x[np.asarray(masks[m], dtype=bool)]
            x = _as_2d(x, f"values[{m!r}]", "ReferenceStats.fit")
            if x.shape[0] < 2:
                raise ValueError(f"ReferenceStats.fit needs >= 2 present rows of modality {m!r}. Got {x.shape[0]}.")
            self.n_seen_[m] = int(x.shape[0])
            self.samples_[m] = x[rng.permutation(x.shape[0])[: self.max_samples]]
        for name in sorted(embeddings or {}):
            e = _as_2d(embeddings[name], f"embeddings[{name!r}]", "ReferenceStats.fit")  # type: ignore[index]
            self.embeddings_[name] = e[rng.permutation(e.shape[0])[: min(self.max_samples, 500)]]
            self.bandwidths_[name] = median_bandwidth(self.embeddings_[name])
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return hasattr(self, "samples_")

    def _require(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("This ReferenceStats is not fitted yet; call fit() or ReferenceStats.load() first.")

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``drift_reference.safetensors`` and ``drift_reference.json`` (atomic; no pickle)."""
        self._require()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"values/{m}": np.ascontiguousarray(v) for m, v in self.samples_.items()}
        tensors.update({f"embeddings/{n}": np.ascontiguousarray(v) for n, v in self.embeddings_.items()})
        atomic_write(d / "drift_reference.safetensors", lambda p: save_file(tensors, str(p)))
        meta = {
            "format": "mmfuse-drift-reference",
            "version": 1,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "n_seen": self.n_seen_,
            "bandwidths": self.bandwidths_,
        }
        return atomic_write_json(d / "drift_reference.json", meta)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ReferenceStats:
        """Read what :meth:`save` wrote.

        Raises:
            FileNotFoundError: a missing file. DataError: a corrupt one (named).
        """
        d = Path(directory)
        meta_path, tensor_path = d / "drift_reference.json", d / "drift_reference.safetensors"
        for p in (meta_path, tensor_path):
            if not p.exists():
                raise FileNotFoundError(f"No drift reference file {p}.")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tensors = load_file(str(tensor_path))
            ref = cls(max_samples=int(meta["max_samples"]), seed=int(meta["seed"]))
            ref.samples_ = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("values/")}
            ref.embeddings_ = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("embeddings/")}
            ref.n_seen_ = {str(k): int(v) for k, v in meta["n_seen"].items()}
            ref.bandwidths_ = {str(k): float(v) for k, v in meta["bandwidths"].items()}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise DataError(f"{d}: corrupt drift reference: {exc}") from None
        return ref


@dataclass
class DriftReport:
    """The result of one drift check.

    Attributes:
        drifted: Whether any test rejected after correction.
        modalities: The modalities that drifted (features, or an embedding named after the modality).
        features: Modality -> indices of drifted features.
        embeddings: Names of the embeddings whose MMD test rejected.
        n_window: Modality (and ``embedding/<name>``) -> rows in the tested window.
        tests: One row per test: ``kind`` ("ks"/"mmd"), ``modality``, ``feature`` (-1 for MMD), ``statistic``,
            ``pvalue``, ``adjusted``, ``rejected``.
    """

    drifted: bool
    modalities: list[str] = field(default_factory=list)
    features: dict[str, list[int]] = field(default_factory=dict)
    embeddings: list[str] = field(default_factory=list)
    n_window: dict[str, int] = field(default_factory=dict)
    tests: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return json_fields(self)

    def summary(self) -> str:
        """One line for logs and alerts."""
        if not self.drifted:
            return "no drift"
        parts = [f"{m} (features {self.features.get(m, [])})" for m in self.modalities]
        return "drift in " + ", ".join(parts)


class DriftMonitor:
    """Windowed drift tests of live data against a :class:`ReferenceStats`.

    Args:
        reference: Fitted reference statistics.
        window: Most recent present rows kept per modality (after ``stride``).
        alpha: False-alarm rate per check (family-wise for Holm/Bonferroni, FDR for BH).
        correction: "holm" (default), "bonferroni" or "bh".
        min_samples: A modality (embedding) is tested only with at least this many rows in its window.
        stride: Keep every ``stride``-th step (thins the correlation of consecutive steps).
        n_permutations: Permutations of the MMD tests.

    Attributes:
        alerts: Every report that drifted, in order.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ref = ReferenceStats().fit({"acc": rng.normal(size=(1000, 3)), "gyro": rng.normal(size=(1000, 2))})
        >>> mon = DriftMonitor(ref, window=200)
        >>> mon.update({"acc": rng.normal(size=(200, 3)), "gyro": rng.normal(size=(200, 2)) + [0.0, 1.0]})
        >>> report = mon.check()
        >>> report.modalities, report.features
        (['gyro'], {'gyro': [1]})
    """

    def __init__(
        self,
        reference: ReferenceStats,
        *,
        window: int = 300,
        alpha: float = 0.01,
        correction: str = "holm",
        min_samples: int = 50,
        stride: int = 1,
        n_permutations: int = 200,
    ) -> None:
        if not isinstance(reference, ReferenceStats):
            raise ValueError(f"DriftMonitor needs a ReferenceStats. Got {type(reference).__name__}.")
        reference._require()
        if correction not in CORRECTIONS:
            raise ValueError(f"Unknown correction {correction!r}. Valid names: {', '.join(CORRECTIONS)}.")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"The 'alpha' parameter of DriftMonitor must be in (0, 1). Got {alpha!r}.")
        for name, v in (("window", window), ("min_samples", min_samples), ("stride", stride)):
            if not isinstance(v, int) or v < (2 if name != "stride" else 1):
                raise ValueError(f"The {name!r} parameter of DriftMonitor must be a positive integer. Got {v!r}.")
        self.reference = reference
        self.window, self.alpha, self.correction = window, float(alpha), correction
        self.min_samples, self.stride, self.n_permutations = min_samples, stride, n_permutations
        self._rows: dict[str, np.ndarray] = {m: np.zeros((0, v.shape[1])) for m, v in reference.samples_.items()}
        self._emb: dict[str, np.ndarray] = {n: np.zeros((0, v.shape[1])) for n, v in reference.embeddings_.items()}
        self._seen = 0
        self.alerts: list[DriftReport] = []
        self.checks = 0

    def update(
        self,
        values: Mapping[str, Any],
        masks: Mapping[str, Any] | None = None,
        embeddings: Mapping[str, Any] | None = None,
    ) -> None:
        """Add ``K`` steps: ``values[m]`` ``[K, D_m]``, ``masks[m]`` ``[K]``, ``embeddings[name]`` ``[K, E]``.

        Missing rows (mask False) are left out; unknown names raise ValueError.
        """
        unknown = sorted(set(values) - set(self._rows)) + sorted(set(embeddings or {}) - set(self._emb))
        if unknown:
            raise ValueError(
                f"DriftMonitor.update got unknown modality/embedding name(s) {unknown}; known: "
                f"{sorted(self._rows)} and embeddings {sorted(self._emb)}."
            )
        k = None
        for m, x in values.items():
            a = np.asarray(x, dtype=np.float64)
            a = a[:, None] if a.ndim == 1 else a
            k = a.shape[0]
            keep = (np.arange(self._seen, self._seen + k) % self.stride) == 0
            if masks is not None and m in masks:
                keep &= np.asarray(masks[m], dtype=bool)
            self._rows[m] = np.vstack([self._rows[m], _as_2d(a[keep], f"values[{m!r}]", "DriftMonitor.update")])[
                -self.window :
            ]
        for n, e in (embeddings or {}).items():
            a = _as_2d(e, f"embeddings[{n!r}]", "DriftMonitor.update")
            k = a.shape[0]
            keep = (np.arange(self._seen, self._seen + k) % self.stride) == 0
            if masks is not None and n in masks:
                keep &= np.asarray(masks[n], dtype=bool)
            self._emb[n] = np.vstack([self._emb[n], a[keep]])[-self.window :]
        self._seen += k or 0

    def reset(self) -> None:
        """Empty the windows (e.g. after adapting the model)."""
        self._rows = {m: v[:0] for m, v in self._rows.items()}
        self._emb = {n: v[:0] for n, v in self._emb.items()}

    def check(self) -> DriftReport:
        """Test the current windows against the reference; log and record an alert when something drifted."""
        rows: list[dict[str, Any]] = []
        for m, cur in self._rows.items():
            if cur.shape[0] < self.min_samples:
                continue
            stat, p = ks_test(self.reference.samples_[m], cur)
            rows += [
                {"kind": "ks", "modality": m, "feature": j, "statistic": float(stat[j]), "pvalue": float(p[j])}
                for j in range(stat.size)
            ]
        for n, cur in self._emb.items():
            if cur.shape[0] < self.min_samples:
                continue
            val, p_mmd = mmd_test(
                self.reference.embeddings_[n],
                cur,
                bandwidth=self.reference.bandwidths_[n],
                n_permutations=self.n_permutations,
                seed=self.checks,
            )
            rows.append({"kind": "mmd", "modality": n, "feature": -1, "statistic": val, "pvalue": p_mmd})
        adjusted = adjust_pvalues([r["pvalue"] for r in rows], self.correction)
        features: dict[str, list[int]] = {}
        embeddings: list[str] = []
        for r, a in zip(rows, adjusted, strict=True):
            r["adjusted"] = float(a)
            r["rejected"] = bool(a <= self.alpha)
            if r["rejected"]:
                if r["kind"] == "ks":
                    features.setdefault(r["modality"], []).append(r["feature"])
                else:
                    embeddings.append(r["modality"])
        drifted_mods = sorted(set(features) | {e for e in embeddings if e in self._rows})
        report = DriftReport(
            drifted=bool(features or embeddings),
            modalities=drifted_mods,
            features=features,
            embeddings=embeddings,
            tests=rows,
            n_window={
                **{m: int(v.shape[0]) for m, v in self._rows.items()},
                **{f"embedding/{n}": int(v.shape[0]) for n, v in self._emb.items()},
            },
        )
        self.checks += 1
        if report.drifted:
            self.alerts.append(report)
            logger.warning("DriftMonitor: %s", report.summary())
        return report
