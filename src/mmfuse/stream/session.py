"""A streaming session: fusion buffer -> normalisers -> incremental model -> stabiliser, for one live stream.

The same trained model directory that ``mmfuse compare`` writes (``model.safetensors`` + ``config.json`` and
``normalizers.json`` + ``normalizers.safetensors``) runs here unchanged. How the live streams are sampled is
read from an optional ``stream.json`` in that directory (see :func:`load_stream_config`), else from the grid rate
and modality kinds that ``mmfuse compare --causal`` records in ``config.json`` (``"stream"``), or given directly.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse._io import atomic_write_json
from mmfuse.errors import DataError, StreamError
from mmfuse.models import MultimodalModel, load_model, read_model_info
from mmfuse.preprocess import ModalityNormalizers
from mmfuse.preprocess.modality import JSON_NAME, TENSORS_NAME
from mmfuse.stream.buffer import AlignedWindow, FusionBuffer, StreamSpec, pop_ready_many
from mmfuse.stream.engine import IncrementalModel, State, split_states, stack_states
from mmfuse.stream.stabilize import Stabilizer, normalized_entropy, stabilize
from mmfuse.types import TaskType

__all__ = [
    "STREAM_CONFIG_FILE",
    "StepResult",
    "StreamConfig",
    "StreamingSession",
    "collect_sessions",
    "load_model_assets",
    "load_stream_config",
    "recorded_stream_config",
    "save_stream_config",
    "step_sessions",
]

STREAM_CONFIG_FILE = "stream.json"
"""Optional file in a model directory describing the live streams (rate, specs, lateness, stabiliser)."""


@dataclass
class StreamConfig:
    """How live data reach a model: the grid rate, one :class:`StreamSpec` per modality and the stabiliser.

    Attributes:
        rate: Step rate of the model's timeline in Hz.
        specs: Modality -> :class:`StreamSpec`.
        lateness: Seconds of lateness the buffer waits for.
        alpha: Stabiliser weight of the newest step.
        threshold: Stabiliser uncertainty threshold (inf: never hold).
        max_history: Steps kept by key/value caches (None: unbounded).
        max_gap: Seconds without any event after which the grid stops until the next event (None: never); see
            :class:`~mmfuse.stream.FusionBuffer`.

    Example:
        >>> cfg = StreamConfig.default({"acc": 3, "gyro": 3}, rate=10.0)
        >>> cfg.specs["acc"].effective_tolerance
        0.1
        >>> StreamConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    rate: float
    specs: dict[str, StreamSpec]
    lateness: float = 0.0
    alpha: float = 0.3
    threshold: float = math.inf
    max_history: int | None = None
    max_gap: float | None = 60.0

    def __post_init__(self) -> None:
        def number(name: str, value: Any, *, positive: bool) -> None:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or value < 0 or (positive and value == 0):
                what = "a positive" if positive else "a non-negative"
                raise StreamError(f"The {name!r} of a StreamConfig must be {what} finite number. Got {value!r}.")

        number("rate", self.rate, positive=True)
        number("lateness", self.lateness, positive=False)
        if self.max_gap is not None:
            number("max_gap", self.max_gap, positive=True)
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < a <= 1.0:
            raise StreamError(f"The 'alpha' of a StreamConfig must be a number in (0, 1]. Got {a!r}.")
        th = self.threshold
        if isinstance(th, bool) or not isinstance(th, (int, float)) or math.isnan(th) or th < 0:
            raise StreamError(f"The 'threshold' of a StreamConfig must be a number >= 0 (inf: never hold). Got {th!r}.")
        mh = self.max_history
        if mh is not None and (isinstance(mh, bool) or not isinstance(mh, int) or mh < 1):
            raise StreamError(f"The 'max_history' of a StreamConfig must be a positive integer or null. Got {mh!r}.")
        if not isinstance(self.specs, Mapping) or not self.specs:
            raise StreamError(f"The 'specs' of a StreamConfig must be a non-empty mapping. Got {self.specs!r}.")
        for m, spec in self.specs.items():
            if not isinstance(spec, StreamSpec):
                raise StreamError(f"The spec of modality {m!r} in a StreamConfig must be a StreamSpec. Got {spec!r}.")

    def check_model(self, modality_dims: Mapping[str, int]) -> None:
        """Check that the specs name exactly the model's modalities, each with the model's dimension.

        Raises:
            StreamError: naming the modality and both values.

        Example:
            >>> StreamConfig.default({"a": 2}, rate=10.0).check_model({"a": 3})
            Traceback (most recent call last):
            ...
            mmfuse.errors.StreamError: The stream spec of modality 'a' has dim 2; the model expects 3.
        """
        if set(self.specs) != set(modality_dims):
            unknown, absent = sorted(set(self.specs) - set(modality_dims)), sorted(set(modality_dims) - set(self.specs))
            raise StreamError(
                f"The stream specs name modalities {sorted(self.specs)} but the model has {sorted(modality_dims)} "
                f"(unknown: {unknown}, without a spec: {absent})."
            )
        for m, spec in self.specs.items():
            if spec.dim != modality_dims[m]:
                raise StreamError(
                    f"The stream spec of modality {m!r} has dim {spec.dim}; the model expects {modality_dims[m]}."
                )

    @classmethod
    def default(cls, modality_dims: Mapping[str, int], rate: float, **kw: Any) -> StreamConfig:
        """Every modality continuous and sampled at ``rate`` (tolerance ``1 / rate``)."""
        return cls(rate=rate, specs={m: StreamSpec(int(d), rate=rate) for m, d in sorted(modality_dims.items())}, **kw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (an infinite threshold is written as null)."""
        return {
            "rate": self.rate,
            "specs": {m: s.to_dict() for m, s in self.specs.items()},
            "lateness": self.lateness,
            "alpha": self.alpha,
            "threshold": None if math.isinf(self.threshold) else self.threshold,
            "max_history": self.max_history,
            "max_gap": self.max_gap,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamConfig:
        """Read :meth:`to_dict` output.

        Raises:
            StreamError: unknown keys or invalid values.
        """
        known = {"rate", "specs", "lateness", "alpha", "threshold", "max_history", "max_gap"}
        if not isinstance(data, Mapping) or set(data) - known or "rate" not in data or "specs" not in data:
            raise StreamError(
                f"A stream config needs 'rate' and 'specs' and only the keys {sorted(known)}. Got {data!r}."
            )
        th = data.get("threshold")
        if not isinstance(data["specs"], Mapping):
            raise StreamError(
                f"The 'specs' of a stream config must be an object: modality -> spec. Got {data['specs']!r}."
            )
        specs = {}
        for m, spec in sorted(data["specs"].items()):
            try:
                specs[str(m)] = StreamSpec.from_value(spec)
            except (StreamError, TypeError) as exc:
                raise StreamError(f"specs.{m}: {exc}") from None
        gap = data.get("max_gap", 60.0)
        return cls(
            rate=_number(data["rate"], "rate"),
            specs=specs,
            lateness=_number(data.get("lateness", 0.0), "lateness"),
            alpha=_number(data.get("alpha", 0.3), "alpha"),
            threshold=math.inf if th is None else _number(th, "threshold"),
            max_history=data.get("max_history"),
            max_gap=None if gap is None else _number(gap, "max_gap"),
        )


def _number(value: Any, name: str) -> float:
    """A JSON number of a stream config as a float (a string or a boolean is refused, not converted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StreamError(f"The {name!r} of a stream config must be a number. Got {value!r}.")
    try:
        return float(value)
    except OverflowError:
        raise StreamError(
            f"The {name!r} of a stream config must be a finite number. Got an integer too large."
        ) from None


def save_stream_config(directory: str | os.PathLike[str], config: StreamConfig) -> Path:
    """Write ``stream.json`` into a model directory (atomic)."""
    return atomic_write_json(Path(directory) / STREAM_CONFIG_FILE, config.to_dict())


def load_stream_config(directory: str | os.PathLike[str]) -> StreamConfig | None:
    """Read ``stream.json`` of a model directory, or None when there is none.

    Raises:
        DataError: naming the file when it is not valid JSON or not a valid stream config.
    """
    path = Path(directory) / STREAM_CONFIG_FILE
    if not path.exists():
        return None
    try:
        return StreamConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a valid stream config: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}: not a valid stream config: the JSON is nested too deeply.") from None


@dataclass
class StepResult:
    """The prediction for one emitted step.

    Attributes:
        t: Step time (recording clock, seconds).
        index: Grid index of the step.
        raw: ``[C]`` class probabilities (classification) or outputs (regression).
        stable: ``[C]`` stabilised outputs.
        held: Whether the stabiliser held the previous output.
        uncertainty: Normalised entropy of ``raw`` (classification), else 0.
        masks: Modality -> present at this step.
        label: Argmax class index of ``stable`` (classification), else None.
    """

    t: float
    index: int
    raw: np.ndarray
    stable: np.ndarray
    held: bool
    uncertainty: float
    masks: dict[str, bool] = field(default_factory=dict)
    label: int | None = None

    def to_dict(self, class_names: Sequence[str] = ()) -> dict[str, Any]:
        """JSON-safe dict."""
        out: dict[str, Any] = {
            "t": round(self.t, 9),
            "index": self.index,
            "raw": [round(float(v), 6) for v in self.raw],
            "stable": [round(float(v), 6) for v in self.stable],
            "held": self.held,
            "uncertainty": round(self.uncertainty, 6),
            "masks": self.masks,
        }
        if self.label is not None:
            out["label"] = self.label
            if class_names:
                out["class_name"] = class_names[self.label]
        return out


class StreamingSession:
    """One live stream through a trained model.

    Args:
        model: A causal :class:`~mmfuse.models.MultimodalModel`, or an :class:`IncrementalModel` shared by several
            sessions (the server shares one).
        config: The :class:`StreamConfig` (rate, specs, lateness, stabiliser).
        normalizers: Fitted normalisers of the model's training data (None: features used as given).
        start: Time of grid step 0 (default: the first event's time).
        class_names: Class names for the outputs (classification).
        max_steps: Most steps one buffer call emits (the oldest beyond it are skipped; None: no bound).
        max_pending: Most events the buffer keeps per modality (see :class:`~mmfuse.stream.FusionBuffer`).

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> cfg = ModelConfig({"a": 1}, out_dim=2, hidden=8, causal=True, bidirectional=False, label_level="step")
        >>> s = StreamingSession(build_model(cfg), StreamConfig.default({"a": 1}, rate=10.0), start=0.0)
        >>> for t in np.arange(0.0, 1.0, 0.1):
        ...     _ = s.push("a", t, [t])
        >>> steps = s.poll()
        >>> len(steps), steps[0].raw.shape
        (8, (2,))
    """

    def __init__(
        self,
        model: MultimodalModel | IncrementalModel,
        config: StreamConfig,
        *,
        normalizers: ModalityNormalizers | None = None,
        start: float | None = None,
        class_names: Sequence[str] = (),
        max_steps: int | None = None,
        max_pending: int = 100_000,
    ) -> None:
        self.engine = (
            model if isinstance(model, IncrementalModel) else IncrementalModel(model, max_history=config.max_history)
        )
        dims = self.engine.config.modality_dims
        config.check_model(dims)
        if normalizers is not None and set(normalizers) != set(dims):
            raise StreamError(f"The normalisers cover {sorted(normalizers)}; the model has {sorted(dims)}.")
        self.config = config
        self.normalizers = normalizers
        self.class_names = tuple(class_names)
        self.classification = TaskType(self.engine.config.task) is TaskType.CLASSIFICATION
        self.buffer = FusionBuffer(
            config.specs,
            config.rate,
            lateness=config.lateness,
            start=start,
            max_pending=max_pending,
            max_gap=config.max_gap,
            max_steps=max_steps,
        )
        self.stabilizer = Stabilizer(config.alpha, config.threshold)
        self.state: State = self.engine.init_state(1)
        self._pending: deque[tuple[float, int, dict[str, np.ndarray], dict[str, bool]]] = deque()
        self.steps = 0
        self.modalities = self.engine.modalities

    @classmethod
    def from_dir(
        cls,
        model_dir: str | os.PathLike[str],
        config: StreamConfig | None = None,
        *,
        rate: float | None = None,
        engine: IncrementalModel | None = None,
        start: float | None = None,
    ) -> StreamingSession:
        """A session for a model directory (weights, config, normalisers and optional ``stream.json``).

        Args:
            model_dir: A directory written by :func:`mmfuse.models.save_model` (e.g. ``mmfuse compare``'s
                ``models/<fusion>-seed<k>/``).
            config: Overrides ``stream.json``; without either, :meth:`StreamConfig.default` at ``rate``.
            rate: Grid rate for the default config.
            engine: Reuse an already loaded model.
            start: Time of grid step 0.

        Raises:
            StreamError: no stream config and no rate.
        """
        assets = load_model_assets(model_dir)
        cfg = config or assets["stream_config"]
        model = engine or assets["engine"]
        if cfg is None:
            if rate is None:
                raise StreamError(
                    f"{model_dir} has no {STREAM_CONFIG_FILE} and its config.json records no grid rate (train with "
                    "'mmfuse compare --causal'); pass a StreamConfig or the grid 'rate' in Hz."
                )
            cfg = StreamConfig.default(model.config.modality_dims, rate)
        return cls(model, cfg, normalizers=assets["normalizers"], start=start, class_names=assets["class_names"])

    # ----------------------------------------------------------------------------------------------- input
    def push(self, modality: str, t: float, values: Any, end: float | None = None) -> int:
        """Add one event (see :meth:`FusionBuffer.push`)."""
        return self.buffer.push(modality, t, values, end)

    def push_many(self, modality: str, times: Any, values: Any, ends: Any = None) -> int:
        """Add events of one modality (see :meth:`FusionBuffer.push_many`)."""
        return self.buffer.push_many(modality, times, values, ends)

    def _normalise(self, window: AlignedWindow) -> dict[str, np.ndarray]:
        if self.normalizers is None or len(window) == 0:
            return window.values
        out = self.normalizers.transform_arrays({m: (window.values[m], window.masks[m]) for m in self.modalities})
        return {m: np.asarray(v, dtype=np.float32) for m, v in out.items()}

    def collect(self, now: float | None = None, *, flush: bool = False) -> int:
        """Move the steps the buffer can emit into this session's queue; returns how many are queued now."""
        while True:  # one window per stretch between gaps
            window = self.buffer.flush() if flush else self.buffer.pop_ready(now)
            if not len(window):
                return len(self._pending)
            self._queue(window, self._normalise(window))

    def drain(self) -> AlignedWindow:
        """End of the stream, offline: every remaining step of the buffer as one window (gaps left out).

        The window's ``first_index`` is that of its first step; after a gap the indices jump (the times show it).
        """
        windows = []
        while len(window := self.buffer.flush()):
            windows.append(window)
        return AlignedWindow.concat(windows) if windows else self.buffer.flush()

    def _queue(self, window: AlignedWindow, values: Mapping[str, np.ndarray]) -> None:
        mods = self.modalities
        times = window.times.tolist()
        masks = {m: window.masks[m].tolist() for m in mods}
        for k in range(len(times)):  # one queue entry per step (each is stepped on its own anyway)
            self._pending.append(
                (times[k], window.first_index + k, {m: values[m][k] for m in mods}, {m: masks[m][k] for m in mods})
            )

    @property
    def pending(self) -> int:
        """Emitted steps waiting for the model."""
        return len(self._pending)

    def poll(self, now: float | None = None) -> list[StepResult]:
        """Emit what the buffer can and run the model on it (this session alone)."""
        self.collect(now)
        return step_sessions([self])[0]

    def finish(self) -> list[StepResult]:
        """End of the stream: flush the buffer and run the model on every remaining step."""
        self.collect(flush=True)
        return step_sessions([self])[0]

    def _result(self, t: float, index: int, masks: dict[str, bool], raw: np.ndarray, u: float) -> StepResult:
        stable, held = self.stabilizer.update(raw, u)
        label = int(stable.argmax()) if self.classification else None
        self.steps += 1
        return StepResult(t=t, index=index, raw=raw, stable=stable, held=held, uncertainty=u, masks=masks, label=label)

    # ------------------------------------------------------------------------------------------ whole recording
    def run_recording(self, window: AlignedWindow) -> dict[str, np.ndarray]:
        """Offline path for a whole aligned recording: one vectorised model pass and :func:`stabilize`.

        Returns:
            ``times [T]``, ``raw [T, C]``, ``stable [T, C]``, ``held [T]``, ``uncertainty [T]``.
        """
        values = self._normalise(window)
        inputs = {m: torch.from_numpy(np.ascontiguousarray(values[m])) for m in self.modalities}
        masks = {m: torch.from_numpy(window.masks[m]) for m in self.modalities}
        out = self.engine.run_offline(inputs, masks).double().numpy()  # [T, C]
        if self.classification:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            raw = e / e.sum(axis=1, keepdims=True)
            unc = normalized_entropy(raw)
        else:
            raw, unc = out, np.zeros(out.shape[0])
        st = stabilize(raw, unc, alpha=self.config.alpha, threshold=self.config.threshold)
        return {"times": window.times, "raw": raw, "stable": st.stable, "held": st.held, "uncertainty": unc}


def step_sessions(sessions: Sequence[StreamingSession], max_rounds: int | None = None) -> list[list[StepResult]]:
    """Run every queued step of several sessions that share one :class:`IncrementalModel`, batched.

    Round ``r`` stacks the states of the sessions with more than ``r`` queued steps and steps them together,
    so 100 streams cost about one batched step each round rather than 100 single ones.

    Args:
        sessions: Sessions sharing one engine.
        max_rounds: Stop after this many rounds (a server yields between rounds so that new messages of other
            streams join the next round); None runs until every queue is empty.

    Returns:
        Per session, its new results in order.

    Raises:
        StreamError: sessions that do not share one engine.
    """
    results: list[list[StepResult]] = [[] for _ in sessions]
    if not sessions:
        return results
    engine = sessions[0].engine
    if any(s.engine is not engine for s in sessions):
        raise StreamError("step_sessions needs sessions that share one IncrementalModel.")
    classification = sessions[0].classification
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        rounds += 1
        active = [i for i, s in enumerate(sessions) if s._pending]
        if not active:
            return results
        items = [sessions[i]._pending.popleft() for i in active]
        inputs = {m: torch.from_numpy(np.stack([it[2][m] for it in items])) for m in engine.modalities}  # [B, D_m]
        masks = {m: torch.tensor([it[3][m] for it in items], dtype=torch.bool) for m in engine.modalities}  # [B]
        state = sessions[active[0]].state if len(active) == 1 else stack_states([sessions[i].state for i in active])
        out, new_state = engine.step(inputs, masks, state)  # [B, C]
        parts = [new_state] if len(active) == 1 else split_states(new_state)
        out_np = out.double().numpy()  # [B, C]
        if classification:  # softmax and normalised entropy of the whole batch at once
            e = np.exp(out_np - out_np.max(axis=1, keepdims=True))
            raw = e / e.sum(axis=1, keepdims=True)  # [B, C]
            unc = normalized_entropy(raw).tolist()  # B floats
        else:
            raw, unc = out_np, [0.0] * len(active)
        for j, i in enumerate(active):
            sessions[i].state = parts[j]
            t, index, _, mk = items[j]
            results[i].append(sessions[i]._result(t, index, mk, raw[j], unc[j]))
    return results


def collect_sessions(sessions: Sequence[StreamingSession], now: float | None = None) -> list[int]:
    """:meth:`StreamingSession.collect` for many sessions at once (what a server runs every round).

    The buffers are aligned together by :func:`~mmfuse.stream.buffer.pop_ready_many` (one alignment call per
    modality for all sessions with the same stream config), and sessions sharing one normaliser object are
    normalised in one call (normalisers act on each step on its own).

    Returns:
        Per session, the number of steps queued now.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> cfg = ModelConfig({"a": 1}, out_dim=2, hidden=8, causal=True, bidirectional=False, label_level="step")
        >>> engine = IncrementalModel(build_model(cfg))
        >>> ss = [StreamingSession(engine, StreamConfig.default({"a": 1}, rate=10.0), start=0.0) for _ in range(3)]
        >>> for s in ss:
        ...     _ = s.push_many("a", np.arange(10) / 10, np.arange(10.0))
        >>> collect_sessions(ss)
        [8, 8, 8]
    """
    todo = list(sessions)
    while todo:  # a buffer stops at a gap: call again for those that emitted something
        emitted = _collect_once(todo, now)
        todo = [s for s, n in zip(todo, emitted, strict=True) if n]
    return [len(s._pending) for s in sessions]


def _collect_once(sessions: Sequence[StreamingSession], now: float | None) -> list[int]:
    """One :func:`pop_ready_many` round for ``sessions``; returns the steps each emitted."""
    windows = pop_ready_many([s.buffer for s in sessions], now)
    groups: dict[int, list[int]] = {}
    for i, (s, w) in enumerate(zip(sessions, windows, strict=True)):
        if len(w):
            groups.setdefault(id(s.normalizers), []).append(i)
    for members in groups.values():
        norms = sessions[members[0]].normalizers
        if norms is None or len(members) == 1:
            for i in members:
                sessions[i]._queue(windows[i], sessions[i]._normalise(windows[i]))
            continue
        mods = sessions[members[0]].modalities
        cat = {
            m: (
                np.concatenate([windows[i].values[m] for i in members]),  # [sum K, D_m]
                np.concatenate([windows[i].masks[m] for i in members]),  # [sum K]
            )
            for m in mods
        }
        normed = norms.transform_arrays(cat)
        ends = np.cumsum([len(windows[i]) for i in members]).tolist()
        cuts = list(zip([0, *ends[:-1]], ends, strict=True))
        split = {m: [np.asarray(normed[m], dtype=np.float32)[i:k] for i, k in cuts] for m in mods}
        for k, i in enumerate(members):
            sessions[i]._queue(windows[i], {m: split[m][k] for m in mods})
    return [len(w) for w in windows]


def recorded_stream_config(info: Mapping[str, Any], where: Any = "config.json") -> StreamConfig | None:
    """The stream config a model's ``config.json`` records (``"stream": {"rate": Hz, "kinds": {m: kind}}``), or None.

    Every modality is sampled on the training grid (:meth:`StreamConfig.default` at ``rate``) with the kind it
    had in the training data.

    Raises:
        DataError: naming ``where`` when the entry is malformed.

    Example:
        >>> info = {"model_config": {"modality_dims": {"a": 3}}, "stream": {"rate": 10.0, "kinds": {"a": "continuous"}}}
        >>> recorded_stream_config(info).specs["a"].effective_tolerance
        0.1
    """
    entry = info.get("stream")
    if entry is None:
        return None
    try:
        dims = dict(info["model_config"]["modality_dims"])
        rate = float(entry["rate"])
        kinds = dict(entry.get("kinds") or {})
        specs = {
            m: StreamSpec(int(d), kind=str(kinds.get(m, "continuous")), rate=rate) for m, d in sorted(dims.items())
        }
        return StreamConfig(rate=rate, specs=specs)
    except (KeyError, TypeError, ValueError, StreamError) as exc:
        raise DataError(
            f"{where}: the 'stream' entry must be {{'rate': Hz, 'kinds': {{modality: kind}}}}. Got {entry!r} ({exc})."
        ) from None


def _load_normalizers(directory: Path, dims: Mapping[str, int]) -> ModalityNormalizers | None:
    """The directory's normalisers (None when it has neither file), checked against the model's modalities."""
    json_path, tensors_path = directory / JSON_NAME, directory / TENSORS_NAME
    if not json_path.exists() and not tensors_path.exists():
        return None
    if not json_path.exists():
        raise DataError(
            f"Incomplete model directory: {tensors_path} exists but its index {json_path} does not; serving without "
            "it would feed unnormalised features to the model. Restore the file or remove both."
        )
    normalizers = ModalityNormalizers.load(directory)
    if set(normalizers) != set(dims):
        raise DataError(
            f"{json_path} names the modalities {sorted(normalizers)} but the model in {directory} has {sorted(dims)}."
        )
    for m, d in dims.items():
        if not getattr(normalizers[m], "is_fitted", True):
            raise DataError(f"{json_path}: the normaliser of modality {m!r} is not fitted; it cannot transform inputs.")
        got = getattr(normalizers[m], "n_features_in_", None)
        if got is not None and int(got) != int(d):
            raise DataError(
                f"{json_path}: the normaliser of modality {m!r} was fitted on {got} features; the model expects {d}."
            )
    return normalizers


def load_model_assets(model_dir: str | os.PathLike[str], *, max_history: int | None = None) -> dict[str, Any]:
    """Load what serving a model directory needs.

    Returns ``engine``, ``normalizers`` (or None), ``stream_config`` (or None), ``class_names`` and ``info``
    (``config.json``). The stream config is ``stream.json`` when the directory has one, else the one
    ``config.json`` records (``"stream": {"rate", "kinds"}``, written by ``mmfuse compare --causal``), else None.

    Everything is checked here, so that a server never starts on a directory it cannot serve: the weights
    (:func:`~mmfuse.models.load_model`), the normalisers (both files or neither; exactly the model's modalities and
    dimensions) and the stream config (exactly the model's modalities and dimensions, valid rates).

    Raises:
        FileNotFoundError: no model in the directory.
        DataError: a corrupt, incomplete or inconsistent file (named).
        StreamError: the model is not causal.
    """
    directory = Path(model_dir)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Model directory {directory} does not exist (expected a folder written by save_model)."
        )
    model = load_model(directory)
    info = read_model_info(directory)
    dims = model.config.modality_dims
    normalizers = _load_normalizers(directory, dims)
    stream_path = directory / STREAM_CONFIG_FILE
    stream_config = load_stream_config(directory) or recorded_stream_config(info, directory / "config.json")
    if stream_config is not None:
        try:
            stream_config.check_model(dims)
        except StreamError as exc:
            where = stream_path if stream_path.exists() else directory / "config.json"
            raise DataError(f"{where} does not fit the model in {directory}: {exc}") from None
    mh = stream_config.max_history if stream_config is not None and max_history is None else max_history
    class_names: list[str] = []
    metrics_file = directory / "test_metrics.json"
    if metrics_file.exists():
        try:
            class_names = [str(c) for c in json.loads(metrics_file.read_text(encoding="utf-8")).get("class_names", [])]
        except (ValueError, AttributeError):
            class_names = []
    if len(class_names) != model.config.out_dim:
        class_names = []
    return {
        "engine": IncrementalModel(model, max_history=mh),
        "normalizers": normalizers,
        "stream_config": stream_config,
        "class_names": class_names,
        "info": info,
    }
