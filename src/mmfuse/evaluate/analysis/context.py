"""What every analysis shares: the run's models, its test (and calibration) data collated once, device and seeds.

:meth:`AnalysisContext.open` reads a compare run directory through :class:`~mmfuse.evaluate.rundir.RunDir`,
loads every saved model with its normalisers and collates each split once per distinct normaliser. Analyses ask
it for outputs: :meth:`AnalysisContext.outputs` stacks every perturbed copy of a batch along the batch axis, so a
model runs one forward pass per kind of analysis rather than one per perturbation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse.data import make_loader, open_or_load_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.analysis.base import check_count
from mmfuse.evaluate.rundir import RunDir
from mmfuse.metrics import get_metric, main_metric
from mmfuse.models import load_model
from mmfuse.preprocess import ModalityNormalizers
from mmfuse.train import select_rows
from mmfuse.types import Batch

__all__ = [
    "AnalysisContext",
    "LoadedModel",
    "RunSettings",
    "SplitData",
    "concat_batches",
    "is_model_dir",
    "model_modalities",
    "restrict",
    "slice_sequence",
    "softmax",
    "take_rows",
]

RowIndex = tuple[Tensor, Tensor | None]  # (sample [S_b], step [S_b] or None) of the labelled rows of a batch
MakeVariants = Callable[[Batch, torch.Generator], list[Batch]]


@dataclass
class RunSettings:
    """The settings every analysis shares (the first fields of :class:`~mmfuse.evaluate.analysis.AnalysisConfig`).

    Attributes:
        split: The split analysed (the test split of the compare run).
        calibration_split: The split calibrators are fitted on (never the analysed one).
        dataset: The data set (registered name or native folder); default: the one named in ``run.json``.
        data_dir: Folder of local data sets (else ``$MMFUSE_DATA_DIR``).
        runs: Only these run names (fusions / baselines) of the run directory; None = every one.
        seed: Seed of every random perturbation (the same draws for every model, so they compare fairly).
        embedding_seed: The seed whose models are used for single-model analyses (maps, inspection, complexity,
            worst cases).
        batch_size: Sequences per collated batch of the split.
        max_stacked_sequences: Upper bound on sequences stacked into one forward pass.
        device: Where the models run.
        num_threads: Torch intra-op threads during the analysis (restored after); None leaves it unchanged.
        write_report: Rewrite ``summary.md`` and ``report.html`` with the analysis sections.
    """

    split: str = "test"
    calibration_split: str = "val"
    dataset: str | None = None
    data_dir: str | None = None
    runs: tuple[str, ...] | None = None
    seed: int = 0
    embedding_seed: int = 0
    batch_size: int = 256
    max_stacked_sequences: int = 4096
    device: str = "cpu"
    num_threads: int | None = 1
    write_report: bool = True

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_count(self, "batch_size")
        check_count(self, "max_stacked_sequences")
        if self.split == self.calibration_split:
            raise ValueError(
                f"The 'calibration_split' of {owner} must differ from the analysed split {self.split!r}: "
                "calibrators are never fitted on the data they are judged on."
            )
        if self.runs is not None:
            self.runs = tuple(self.runs)


@dataclass
class SplitData:
    """One split, normalised and collated, with its labelled rows described once."""

    batches: list[Batch]
    row_index: list[RowIndex]  # per batch: which outputs are labelled rows
    modalities: list[str]
    targets: np.ndarray  # [S] (class index) or [S] / [S, K] (regression)
    row_ids: list[str]  # sequence id of each labelled row
    row_steps: np.ndarray | None  # [S] step of each row (step labels)
    availability: list[str]  # per row: the modalities present ("text+video")
    std: dict[str, Tensor]  # per modality [D_m], over present real steps (normalised)
    lengths: np.ndarray  # [n_sequences]

    @cached_property
    def whole(self) -> Batch:
        """Every batch of the split stacked along B (padded to the longest T), built once and shared."""
        return concat_batches(self.batches)


@dataclass(eq=False)
class LoadedModel:
    """One saved model of the run (a fusion x seed), in eval mode on the analysis device."""

    name: str
    seed: int
    directory: Path
    model: nn.Module
    data_key: str  # the fingerprint of its normalisers: models with the same one share collated data


class AnalysisContext:
    """The run, its models and data, shared by every analysis; build it with :meth:`open`.

    Attributes:
        run: The run directory.
        settings: The shared settings.
        meta: ``run.json``.
        dataset: The opened data set.
        models: Every selected saved model, in ``results.csv`` order.
        task: ``"classification"`` or ``"regression"``.
        level: ``"sample"`` or ``"step"`` labels.
        class_names: The data set's class names (empty for regression).
        notes: What was skipped, and why (shown by the CLI and the report).
    """

    def __init__(
        self,
        run: RunDir,
        settings: RunSettings,
        meta: Mapping[str, Any],
        dataset: Any,
        models: list[LoadedModel],
        task: str,
        level: str,
    ) -> None:
        self.run = run
        self.single_model = False  # True when the "run" is one model directory (mmfuse train's output)
        self.settings = settings
        self.meta = meta
        self.dataset = dataset
        self.models = models
        self.task = task
        self.level = level
        self.class_names = list(getattr(dataset.task, "class_names", []) or [])
        self.notes: list[str] = []
        self.device = torch.device(settings.device)
        self._splits: dict[tuple[str, str], SplitData] = {}
        self._clean: dict[LoadedModel, np.ndarray] = {}

    @classmethod
    def open(cls, run_dir: str | Path, settings: RunSettings) -> AnalysisContext:
        """Read the run directory, open its data set and load every selected model.

        Raises:
            DataError: no run directory, no ``run.json`` / ``results.csv``, a missing saved model, or a data set
                that cannot be opened or lacks the analysed split.
            ValueError: ``settings.runs`` names a run the directory does not have.
        """
        run = RunDir(run_dir)
        single = is_model_dir(run.path)
        meta = _model_dir_meta(run.path) if single else run.read_meta()
        runs = [_model_dir_run(run.path)] if single else _select_runs(run, settings.runs)
        dataset = _open_data(meta, settings)
        if settings.split not in dataset.split_names:
            raise DataError(f"The data set has no split {settings.split!r}; its splits: {dataset.split_names}.")
        models = []
        for name, seed in runs:
            directory = run.path if single else run.model_dir(name, seed)
            if not (directory / "model.safetensors").is_file():
                raise DataError(f"The saved model of {name} seed {seed} is missing: '{directory}/model.safetensors'.")
            model = load_model(directory, map_location=settings.device).eval()
            models.append(LoadedModel(name, seed, directory, model, _normalizer_key(directory)))
        task, level = _task_level(models[0].model, meta)
        ctx = cls(run, settings, meta, dataset, models, task, level)
        ctx.single_model = single
        return ctx

    # ----------------------------------------------------------------------------------------------- models
    @property
    def names(self) -> list[str]:
        """The fusion (run) names, in order, each once."""
        return list(dict.fromkeys(m.name for m in self.models))

    def seeds_of(self, name: str) -> list[LoadedModel]:
        """Every seed's model of the fusion ``name``."""
        return [m for m in self.models if m.name == name]

    def single(self, name: str) -> LoadedModel:
        """The model of ``name`` used by single-model analyses: seed ``embedding_seed``, else its first seed."""
        seeds = self.seeds_of(name)
        return next((m for m in seeds if m.seed == self.settings.embedding_seed), seeds[0])

    @property
    def main_metric(self) -> str:
        """The registered metric the analyses score with (:func:`mmfuse.metrics.main_metric`: accuracy or MAE)."""
        return main_metric(self.task)

    @property
    def higher_is_better(self) -> bool:
        """Whether the main metric is higher-is-better, as the metric registry declares it."""
        return get_metric(self.main_metric).higher_is_better

    @property
    def metric_label(self) -> str:
        """``"accuracy"`` or ``"MAE"``: the main metric of the analyses."""
        return "accuracy" if self.higher_is_better else "MAE"

    def note(self, text: str) -> None:
        """Record something skipped, and why."""
        self.notes.append(text)

    # ------------------------------------------------------------------------------------------------- data
    def has_split(self, split: str) -> bool:
        """Whether the data set has ``split``."""
        return split in self.dataset.split_names

    def split(self, model: LoadedModel, split: str) -> SplitData:
        """``split`` normalised with ``model``'s normalisers, collated once per distinct normaliser."""
        key = (model.data_key, split)
        if key not in self._splits:
            normalizers = ModalityNormalizers.load(model.directory)
            self._splits[key] = _collate_split(
                self.dataset, split, normalizers, self.settings.batch_size, self.task, self.level
            )
        return self._splits[key]

    def test(self, model: LoadedModel) -> SplitData:
        """The analysed split as ``model`` sees it."""
        return self.split(model, self.settings.split)

    @property
    def reference(self) -> SplitData:
        """The analysed split as the first model sees it: its rows, targets, ids and lengths are every model's."""
        return self.test(self.models[0])

    # ---------------------------------------------------------------------------------------------- outputs
    def generator(self) -> torch.Generator:
        """A fresh generator seeded with ``settings.seed``: every model gets the same random draws."""
        return torch.Generator().manual_seed(self.settings.seed)

    @contextmanager
    def seeded(self) -> Iterator[None]:
        """Run the block with torch's global generators seeded by ``settings.seed``, restored afterwards.

        For randomness an analysis cannot route through :meth:`generator` (dropout layers in MC dropout): every
        model then sees the same draws, and a rerun gives the same numbers.
        """
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.settings.seed)
            yield

    def outputs(self, model: LoadedModel, make: MakeVariants, split: SplitData | None = None) -> list[np.ndarray]:
        """Per variant ``make(batch, generator)`` returns, the labelled-row outputs ``[S, C]`` over the split.

        Every batch's variants are stacked along the batch axis (up to ``max_stacked_sequences`` per forward).
        """
        data = split if split is not None else self.test(model)
        gen = self.generator()
        parts = [
            self.stacked_rows(model.model, batch, make(batch, gen), index)
            for batch, index in zip(data.batches, data.row_index, strict=True)
        ]
        return [torch.cat([p[k] for p in parts]).numpy() for k in range(len(parts[0]))]

    def clean(self, model: LoadedModel) -> np.ndarray:
        """The labelled-row outputs of ``model`` on the unperturbed analysed split (computed once)."""
        if model not in self._clean:
            self._clean[model] = self.outputs(model, lambda b, g: [b])[0]
        return self._clean[model]

    def stacked_rows(
        self, model: nn.Module, batch: Batch, variants: Sequence[Batch], index: RowIndex | None = None
    ) -> list[Tensor]:
        """Labelled-row outputs ``[S, C]`` of ``model`` on each variant of ``batch`` (same B, T), on the CPU.

        With ``index`` None the rows are selected from each variant's own targets (variants that change B or T).
        """
        mods = model_modalities(model, batch)
        per = max(1, self.settings.max_stacked_sequences // max(batch.batch_size, 1))
        out: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, len(variants), per):
                chunk = [restrict(v, mods) for v in variants[start : start + per]]
                shared = set.intersection(*(set(v.context) for v in chunk))  # categorical context all variants have
                stacked = Batch(
                    {m: torch.cat([v.inputs[m] for v in chunk]) for m in mods},  # [k*B, T, D_m]
                    {m: torch.cat([v.masks[m] for v in chunk]) for m in mods},  # [k*B, T]
                    torch.cat([v.padding_mask for v in chunk]),
                    None,
                    context={k: torch.cat([v.context[k] for v in chunk]) for k in sorted(shared)},  # [k*B]
                )
                outputs = model(stacked.to(self.device)).cpu()  # [k*B, C] or [k*B, T, C]
                for k, piece in enumerate(outputs.split(batch.batch_size)):
                    if index is not None:
                        out.append(take_rows(piece, index).float())
                    else:
                        out.append(select_rows(piece, variants[start + k], self.task, self.level).outputs.float())
        return out

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """The main metric of ``outputs`` (accuracy, or MAE for regression); NaN without rows."""
        if outputs.shape[0] == 0:
            return float("nan")
        if self.task == "classification":
            return float((outputs.argmax(axis=-1) == targets).mean())
        return float(np.abs(outputs.reshape(targets.shape) - targets).mean())


# ------------------------------------------------------------------------------------------- batch helpers
def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max-shifted).

    Example:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def restrict(batch: Batch, modalities: Sequence[str]) -> Batch:
    """``batch`` with only ``modalities`` (what a model's config lists)."""
    return Batch(
        {m: batch.inputs[m] for m in modalities},
        {m: batch.masks[m] for m in modalities},
        batch.padding_mask,
        batch.targets,
        batch.ids,
        batch.groups,
        batch.context,
    )


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Stack batches along B, padding every one to the longest T."""
    t = max(b.num_steps for b in batches)

    def pad(x: Tensor, value: Any = 0) -> Tensor:
        extra = t - x.shape[1]
        if extra == 0:
            return x
        shape = list(x.shape)
        shape[1] = extra
        return torch.cat([x, torch.full(shape, value, dtype=x.dtype)], dim=1)

    first = batches[0]
    targets = None
    if first.targets is not None:
        step = first.targets.dim() >= 2 and first.targets.shape[1] == first.num_steps and first.num_steps > 1
        if step or any(b.targets is not None and b.targets.dim() >= 2 for b in batches if b.num_steps != t):
            fill = -100 if not first.targets.is_floating_point() else 0.0
            targets = torch.cat([pad(b.targets, fill) for b in batches])  # type: ignore[arg-type]
        else:
            targets = torch.cat([b.targets for b in batches])  # type: ignore[misc]
    return Batch(
        inputs={m: torch.cat([pad(b.inputs[m]) for b in batches]) for m in first.inputs},
        masks={m: torch.cat([pad(b.masks[m], False) for b in batches]) for m in first.masks},
        padding_mask=torch.cat([pad(b.padding_mask, False) for b in batches]),
        targets=targets,
        ids=[i for b in batches for i in b.ids],
        groups=[g for b in batches for g in b.groups],
        context={k: torch.cat([b.context[k] for b in batches]) for k in first.context},
    )


def slice_sequence(batch: Batch, i: int) -> Batch:
    """The ``i``-th sequence as a one-sequence batch, trimmed to its real length."""
    n = int(batch.padding_mask[i].sum())
    return Batch(
        {m: x[i : i + 1, :n] for m, x in batch.inputs.items()},
        {m: k[i : i + 1, :n] for m, k in batch.masks.items()},
        batch.padding_mask[i : i + 1, :n],
        None,
        batch.ids[i : i + 1],
    )


def model_modalities(model: nn.Module, batch: Batch) -> list[str]:
    """The modalities ``model`` takes: its config's, else every one of ``batch``."""
    mods = getattr(model, "modalities", None)
    return list(mods) if mods else sorted(batch.inputs)


def take_rows(outputs: Tensor, index: RowIndex) -> Tensor:
    """Labelled rows of ``outputs`` ``[B, ...]`` / ``[B, T, ...]`` -> ``[S, ...]`` (pooled outputs repeat per step)."""
    sample, step = index
    if step is None:
        return outputs[sample]
    if outputs.dim() == 2:  # [B, C] for step labels: the same output for every step
        return outputs[sample]
    return outputs[sample, step]


# ------------------------------------------------------------------------------------------------- loading
def is_model_dir(path: Path) -> bool:
    """True for one saved model (``mmfuse train``'s output: ``config.json`` + weights) rather than a compare run."""
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file() and not RunDir(path).is_run()


def _model_dir_meta(path: Path) -> dict[str, Any]:
    """The ``run.json`` a single model directory stands for: the data set its ``config.json`` records."""
    from mmfuse.models import read_model_info

    info = read_model_info(path)
    name = info.get("dataset")
    return {"dataset": {"name": name}} if isinstance(name, str) and name else {}


def _model_dir_run(path: Path) -> tuple[str, int]:
    """(fusion, seed) of a single model directory, from its ``config.json``."""
    from mmfuse.models import read_model_info

    info = read_model_info(path)
    fusion = str(info["model_config"].get("fusion", path.name))
    train = info.get("train_config")
    seed = train.get("seed", 0) if isinstance(train, dict) else 0
    return fusion, int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _select_runs(run: RunDir, only: Sequence[str] | None) -> list[tuple[str, int]]:
    results = run.read_results()
    runs = [(str(f), int(s)) for f, s in zip(results["fusion"], results["seed"], strict=True)]
    if only is not None:
        known = {f for f, _ in runs}
        missing = [r for r in only if r not in known]
        if missing:
            raise ValueError(
                f"Unknown run {missing[0]!r} for AnalysisConfig.runs. This run directory has: {sorted(known)}."
            )
        runs = [r for r in runs if r[0] in set(only)]
    return runs


def _open_data(meta: Mapping[str, Any], settings: RunSettings) -> Any:
    name = settings.dataset
    if name is None:
        ds = meta.get("dataset")
        recorded = ds.get("path") if isinstance(ds, dict) else None  # a native folder, when compare records it
        name = (
            recorded
            if recorded and Path(str(recorded)).is_dir()
            else (ds.get("name") if isinstance(ds, dict) else None)
        )
    if not name:
        raise DataError("run.json names no data set; pass AnalysisConfig(dataset=NAME_OR_FOLDER).")
    try:
        return open_or_load_dataset(name, data_dir=settings.data_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise DataError(
            f"Cannot open the data set {name!r} of this run ({exc}). Pass AnalysisConfig(dataset=..., data_dir=...) "
            "or set MMFUSE_DATA_DIR."
        ) from exc


def _normalizer_key(directory: Path) -> str:
    digest = hashlib.sha256()
    for fname in ("normalizers.json", "normalizers.safetensors"):
        path = directory / fname
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _task_level(model: nn.Module, meta: Mapping[str, Any]) -> tuple[str, str]:
    cfg = getattr(model, "config", None)
    task = getattr(getattr(cfg, "task", None), "value", getattr(cfg, "task", None))
    level = getattr(getattr(cfg, "label_level", None), "value", getattr(cfg, "label_level", None))
    ds = meta.get("dataset", {}) if isinstance(meta.get("dataset"), dict) else {}
    declared = ds.get("task", {}) if isinstance(ds.get("task"), dict) else {}
    return str(task or declared.get("type", "classification")), str(level or declared.get("level", "sample"))


def _collate_split(dataset: Any, split: str, normalizers: Any, batch_size: int, task: Any, level: Any) -> SplitData:
    view = dataset.split(split).with_transform(normalizers.transform_record)
    batches = list(make_loader(view, batch_size=batch_size, shuffle=False))
    modalities = sorted(batches[0].inputs)
    targets: list[np.ndarray] = []
    ids: list[str] = []
    steps: list[np.ndarray] = []
    avail: list[str] = []
    row_index: list[RowIndex] = []
    for b in batches:
        if b.targets is not None and b.targets.is_floating_point():
            probe = torch.zeros_like(b.targets)  # regression: outputs shaped like the targets
        else:
            probe = torch.zeros(*b.padding_mask.shape, 2) if level == "step" else torch.zeros(b.batch_size, 2)
        rows = select_rows(probe, b, task, level)
        row_index.append((rows.sample, rows.step))
        sample = rows.sample.numpy()
        targets.append(rows.targets.numpy() if rows.targets is not None else np.zeros(len(sample)))
        ids.extend(b.ids[i] for i in sample.tolist())
        pres = _presence(b, modalities, rows.sample, rows.step)  # [S, M]
        avail.extend("+".join(m for m, p in zip(modalities, row, strict=True) if p) or "none" for row in pres)
        if rows.step is not None:
            steps.append(rows.step.numpy())
    from mmfuse.evaluate.analysis.robustness import feature_std  # robustness imports this module

    data = SplitData(
        batches=batches,
        row_index=row_index,
        modalities=modalities,
        targets=np.concatenate(targets),
        row_ids=ids,
        row_steps=np.concatenate(steps) if steps else None,
        availability=avail,
        std={},
        lengths=np.concatenate([b.padding_mask.sum(1).numpy() for b in batches]),
    )
    data.std.update({m: feature_std(data.whole, m) for m in modalities})  # the stacked split, kept for analyses
    return data


def _presence(b: Batch, modalities: Sequence[str], sample: Tensor, step: Tensor | None) -> np.ndarray:
    """``[S, M]``: whether each modality is present at each labelled row (any present step, for sample labels)."""
    present = []
    for m in modalities:
        if step is not None:
            present.append(b.masks[m][sample, step].numpy())
        else:
            frac = (b.masks[m] & b.padding_mask).float().sum(1) / b.padding_mask.float().sum(1).clamp(min=1)
            present.append(frac[sample].numpy() > 0)
    return np.stack(present, axis=1)
