from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from train_toys import MeanNet, make_batches

from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, build_model, load_model
from mmfuse.train import (
    Callback,
    HistoryRecorder,
    TrainConfig,
    Trainer,
    build_optimizer,
    evaluate_model,
    predict,
)
from mmfuse.train._data import BatchSource
from mmfuse.train.trainer import _balanced_weights

# The suite runs on a GPU when one is lent: MMFUSE_TEST_DEVICE=cuda.
DEVICE = os.environ.get("MMFUSE_TEST_DEVICE", "cpu")
FAST = {"scheduler": "none", "patience": None, "device": DEVICE}


def _model(seed: int = 0, **kw: Any) -> nn.Module:
    torch.manual_seed(seed)
    # The conv encoder keeps these tests fast (packed GRUs cost ~0.1 s per tiny batch on 2 cores).
    kw.setdefault("encoder", "conv")
    cfg = ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=8, dropout=0.2, **kw)
    return build_model(cfg)


def _weights_equal(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].cpu(), sb[k].cpu(), atol=atol, rtol=0) for k in sa)


def _without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# -- learning ------------------------------------------------------------------------------------------------
def test_learns_a_toy_task_from_a_dataset(toy_dataset: Any) -> None:
    cfg = TrainConfig(epochs=12, batch_size=8, lr=1e-2, monitor="accuracy", patience=None, device=DEVICE)
    result = Trainer(cfg).fit(_model(), toy_dataset.split("train"), toy_dataset.split("val"))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_metric is not None and result.best_metric >= 0.9
    assert {"val_loss", "val_accuracy", "val_f1_weighted", "val_f1_macro", "lr", "seconds"} <= set(result.history[0])


def test_restore_best_and_evaluate_model(toy_dataset: Any) -> None:
    val = toy_dataset.split("val")
    model = _model()
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-2, monitor="accuracy", patience=None, device=DEVICE)
    result = Trainer(cfg).fit(model, toy_dataset.split("train"), val)
    metrics = evaluate_model(model, val, toy_dataset.task)
    assert metrics["accuracy"] == pytest.approx(result.best_metric)
    assert metrics["class_names"] == ["neg", "pos"] and len(metrics["confusion_matrix"]) == 2


def test_step_level_training_and_flattened_predictions() -> None:
    lengths = [6, 4, 2, 5]
    train = make_batches(6, 4, 6, seed=1, lengths=lengths, step_labels=True)
    val = make_batches(2, 4, 6, seed=2, lengths=lengths, step_labels=True)
    model = _model(label_level="step")
    cfg = TrainConfig(epochs=8, lr=1e-2, monitor="accuracy", **FAST)
    result = Trainer(cfg).fit(model, train, val)
    assert result.best_metric is not None and result.best_metric >= 0.9
    p = predict(model, val)
    assert p.level == "step" and p.step_index is not None
    assert len(p) == 2 * sum(lengths)  # only real steps
    assert p.row_ids[:6] == ["s0"] * 6 and p.ids[:4] == ["s0", "s1", "s2", "s3"]
    for row in range(len(p)):  # every row points at a real step with the right label
        batch = val[p.sample_index[row] // 4]
        b, t = p.sample_index[row] % 4, p.step_index[row]
        assert bool(batch.padding_mask[b, t]) and int(batch.targets[b, t]) == int(p.y_true[row])


def test_regression_monitors_mae() -> None:
    train = make_batches(4, 8, 5, seed=3, regression=True)
    val = make_batches(1, 8, 5, seed=4, regression=True)
    torch.manual_seed(0)
    result = Trainer(TrainConfig(epochs=15, lr=1e-2, **FAST)).fit(MeanNet(out_dim=1), train, val)
    assert result.monitor == "mae" and result.mode == "min"
    maes = [row["val_mae"] for row in result.history]
    assert min(maes) < 0.5 * maes[0]
    assert result.best_metric == pytest.approx(min(maes))


def test_regression_refuses_class_options() -> None:
    data = make_batches(1, 4, 3, seed=5, regression=True)
    with pytest.raises(ValueError, match="class_weights"):
        Trainer(TrainConfig(epochs=1, class_weights="balanced")).fit(MeanNet(out_dim=1), data, data)


# -- early stopping ------------------------------------------------------------------------------------------
class Scripted(nn.Module):
    """Validation accuracy follows ``script``, one entry per validation pass (val ids start with 'v')."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.script = script
        self.passes = 0

    def forward(self, batch: Any) -> torch.Tensor:
        n = batch.batch_size
        base = torch.stack([self.w, -self.w]).expand(n, 2)  # [B, 2]
        if self.training or not batch.ids[0].startswith("v"):
            return base
        acc = self.script[self.passes]
        self.passes += 1
        right = torch.arange(n) < round(acc * n)
        pred = torch.where(right, batch.targets, 1 - batch.targets)
        return base + 5.0 * nn.functional.one_hot(pred, 2).float()


def test_early_stopping_follows_a_scripted_curve(tmp_path: Path) -> None:
    script = [0.3, 0.5, 0.6, 0.6, 0.5, 0.4, 0.9, 0.9]
    train = make_batches(2, 4, 3, seed=6)
    val = [dataclasses.replace(make_batches(1, 10, 3, seed=7)[0], ids=[f"v{i}" for i in range(10)])]
    cfg = TrainConfig(epochs=8, patience=3, monitor="accuracy", scheduler="none", device=DEVICE)
    rec = HistoryRecorder()
    result = Trainer(cfg, callbacks=[rec]).fit(Scripted(script), train, val, out_dir=tmp_path)
    assert [row["val_accuracy"] for row in result.history] == pytest.approx(script[:6])
    assert result.epochs_run == 6 and result.stopped_early
    assert result.best_epoch == 3 and result.best_metric == pytest.approx(0.6)
    assert json.loads((tmp_path / "trainer_state.json").read_text())["best_epoch"] == 3
    assert [logs["improved"] for logs in rec.epochs] == [True, True, True, False, False, False]
    assert rec.result is result


def test_without_patience_all_epochs_run() -> None:
    script = [0.5, 0.4, 0.3, 0.2]
    train = make_batches(1, 4, 3, seed=6)
    val = [dataclasses.replace(make_batches(1, 10, 3, seed=7)[0], ids=[f"v{i}" for i in range(10)])]
    cfg = TrainConfig(epochs=4, patience=None, monitor="accuracy", scheduler="none")
    result = Trainer(cfg).fit(Scripted(script), train, val)
    assert result.epochs_run == 4 and not result.stopped_early and result.best_epoch == 1


def test_unknown_monitor_is_reported() -> None:
    data = make_batches(1, 4, 3, seed=8)
    cfg = TrainConfig(epochs=1, monitor="pearson", scheduler="none")
    with pytest.raises(ValueError, match="pearson"):
        Trainer(cfg).fit(MeanNet(), data, data)


# -- optimisation details ------------------------------------------------------------------------------------
def _grad_norms(cfg: TrainConfig) -> list[float]:
    norms: list[float] = []

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    data = make_batches(3, 4, 3, seed=9, regression=True)
    for batch in data:
        batch.targets.mul_(100.0)  # large errors -> large gradients
    handle = register_optimizer_step_pre_hook(hook)
    try:
        torch.manual_seed(0)
        Trainer(cfg).fit(MeanNet(out_dim=1), data, data)
    finally:
        handle.remove()
    return norms


def test_gradient_clipping_bounds_the_norm() -> None:
    clipped = _grad_norms(TrainConfig(epochs=2, grad_clip=0.5, **FAST))
    free = _grad_norms(TrainConfig(epochs=2, grad_clip=None, **FAST))
    assert len(clipped) == 6 and max(clipped) <= 0.5 + 1e-5
    assert max(free) > 10.0  # the same run without clipping has far larger gradients


def test_no_weight_decay_on_biases_and_norm_weights() -> None:
    model = _model()
    opt = build_optimizer(model, TrainConfig(weight_decay=0.05))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    assert norm_weights and norm_weights <= {id(p) for p in no_decay["params"]}
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(decay["params"]) + len(no_decay["params"]) == n_trainable


def test_cosine_schedule_with_warmup_in_history() -> None:
    data = make_batches(1, 4, 3, seed=10)
    cfg = TrainConfig(epochs=5, lr=0.1, warmup_epochs=2, scheduler="cosine", patience=None)
    result = Trainer(cfg).fit(MeanNet(), data, data)
    lrs = [row["lr"] for row in result.history]
    expected = [
        0.1 / 3,
        0.2 / 3,
        0.1,
        0.1 * 0.5 * (1 + math.cos(math.pi / 3)),
        0.1 * 0.5 * (1 + math.cos(2 * math.pi / 3)),
    ]
    assert lrs == pytest.approx(expected)


def test_plateau_scheduler_lowers_the_rate() -> None:
    script = [0.5, 0.5, 0.5, 0.5, 0.5]
    train = make_batches(1, 4, 3, seed=6)
    val = [dataclasses.replace(make_batches(1, 10, 3, seed=7)[0], ids=[f"v{i}" for i in range(10)])]
    cfg = TrainConfig(
        epochs=5, lr=0.1, scheduler="plateau", plateau_patience=1, plateau_factor=0.5, patience=None, monitor="accuracy"
    )
    result = Trainer(cfg).fit(Scripted(script), train, val)
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.1


def test_balanced_class_weights() -> None:
    batches = make_batches(2, 8, 3, seed=11)
    ys = torch.cat([b.targets for b in batches])
    counts = torch.bincount(ys, minlength=2).double()
    weights = _balanced_weights(BatchSource(batches, "train", batch_size=8, shuffle=False))
    assert torch.allclose(weights.double(), counts.sum() / (2 * counts))
    result = Trainer(TrainConfig(epochs=2, class_weights="balanced", **FAST)).fit(MeanNet(), batches, batches)
    assert result.epochs_run == 2


def test_callbacks_may_be_duck_typed() -> None:
    seen: list[tuple[str, Any]] = []

    class Partial:
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            seen.append(("epoch", epoch))

    class Full(Callback):
        def on_train_begin(self, logs: Any) -> None:
            seen.append(("begin", logs["epochs"]))

        def on_batch_end(self, batch: int, logs: Any) -> None:
            seen.append(("batch", batch))

    data = make_batches(2, 4, 3, seed=12)
    Trainer(TrainConfig(epochs=2, **FAST), callbacks=[Partial(), Full()]).fit(MeanNet(), data, data)
    assert seen == [("begin", 2), ("batch", 0), ("batch", 1), ("epoch", 1), ("batch", 0), ("batch", 1), ("epoch", 2)]


def test_deterministic_flag_is_scoped_to_the_fit() -> None:
    seen: list[bool] = []

    class Probe(Callback):
        def on_epoch_end(self, epoch: int, logs: Any) -> None:
            seen.append(torch.are_deterministic_algorithms_enabled())

    data = make_batches(1, 4, 3, seed=17)
    before = torch.are_deterministic_algorithms_enabled()
    Trainer(TrainConfig(epochs=1, deterministic=True, **FAST), callbacks=[Probe()]).fit(MeanNet(), data, data)
    assert seen == [True] and torch.are_deterministic_algorithms_enabled() == before


def test_bad_data_arguments() -> None:
    data = make_batches(1, 4, 3, seed=13)
    with pytest.raises(TypeError, match="one-shot iterator"):
        Trainer(TrainConfig(epochs=1)).fit(MeanNet(), iter(data), data)
    with pytest.raises(TypeError, match="Batch"):
        Trainer(TrainConfig(epochs=1)).fit(MeanNet(), [1, 2], data)
    with pytest.raises(ValueError, match="out_dir"):
        Trainer(TrainConfig(epochs=1)).fit(MeanNet(), data, data, resume=True)


# -- reproducibility and checkpoints -------------------------------------------------------------------------
def test_same_seed_same_run_different_seed_different_run(toy_dataset: Any) -> None:
    train, val = toy_dataset.split("train"), toy_dataset.split("val")

    def run(seed: int) -> tuple[nn.Module, list[dict[str, Any]]]:
        model = _model(seed)
        cfg = TrainConfig(epochs=2, batch_size=8, seed=seed, monitor="loss", restore_best=False, device=DEVICE)
        return model, Trainer(cfg).fit(model, train, val).history

    m1, h1 = run(3)
    m2, h2 = run(3)
    m3, _ = run(4)
    assert _weights_equal(m1, m2, atol=0) and _without_seconds(h1) == _without_seconds(h2)
    assert not _weights_equal(m1, m3)


class _Interrupt(Callback):
    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        if epoch == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
def test_resume_matches_an_uninterrupted_run(toy_dataset: Any, tmp_path: Path, scheduler: str) -> None:
    train, val = toy_dataset.split("train"), toy_dataset.split("val")
    # With "plateau", accuracy on 16 validation sequences stalls, so the rate drops after epochs whose outcome
    # depends on the restored scheduler state (best value, bad-epoch counter).
    monitor = "accuracy" if scheduler == "plateau" else "loss"
    lr = 2e-2 if scheduler == "plateau" else 5e-3
    cfg = TrainConfig(
        epochs=4,
        batch_size=8,
        lr=lr,
        scheduler=scheduler,
        warmup_epochs=1,
        monitor=monitor,
        plateau_patience=1,
        restore_best=False,
        seed=5,
        device=DEVICE,
        deterministic=DEVICE != "cpu",
    )

    straight = _model(1)
    full = Trainer(cfg).fit(straight, train, val, out_dir=tmp_path / "a")
    lrs = [row["lr"] for row in full.history]
    assert len(set(lrs[2:])) == 2 if scheduler == "cosine" else lrs[3] < lrs[2], lrs  # the schedule acts after resume

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, callbacks=[_Interrupt()]).fit(_model(1), train, val, out_dir=tmp_path / "b")
    assert json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())["epoch"] == 2

    resumed = _model(99)  # different initial weights: everything must come from the checkpoint
    rec = HistoryRecorder()
    again = Trainer(cfg, callbacks=[rec]).fit(resumed, train, val, out_dir=tmp_path / "b", resume=True)
    assert [logs["epoch"] for logs in rec.epochs] == [3, 4]
    assert _weights_equal(straight, resumed, atol=1e-6)
    assert _without_seconds(again.history) == _without_seconds(full.history)
    assert (again.best_epoch, again.best_metric) == (full.best_epoch, full.best_metric)


def test_checkpoint_files_exist_and_load(toy_dataset: Any, tmp_path: Path) -> None:
    model = _model()
    cfg = TrainConfig(epochs=3, batch_size=16, monitor="accuracy", device=DEVICE)
    result = Trainer(cfg).fit(model, toy_dataset.split("train"), toy_dataset.split("val"), out_dir=tmp_path)
    names = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    expected = (
        {"model.safetensors", "config.json", "trainer_state.json", "history.json"}
        | {f"last/{stem}.{ext}" for stem in ("optimizer", "scheduler", "rng") for ext in ("safetensors", "json")}
        | {"last/model.safetensors", "last/best.safetensors", "last/trainer_state.json"}
    )
    assert names == expected  # nothing else: no temporary files, no pickles
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    best = load_model(tmp_path)  # restore_best: the trained model holds the best epoch's weights
    assert _weights_equal(best, model, atol=0)
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["best_epoch"] == result.best_epoch and state["config"] == cfg.to_dict()


def test_plain_module_checkpoint_uses_given_config(tmp_path: Path) -> None:
    from mmfuse.train import load_weights

    data = make_batches(1, 4, 3, seed=14)
    model = MeanNet()
    Trainer(TrainConfig(epochs=1, **FAST)).fit(model, data, data, out_dir=tmp_path, model_config={"hidden": 8})
    assert json.loads((tmp_path / "config.json").read_text()) == {"hidden": 8}
    other = load_weights(MeanNet(), tmp_path / "model.safetensors")
    assert _weights_equal(model, other, atol=0)


def test_resume_errors_name_the_file(tmp_path: Path) -> None:
    data = make_batches(1, 4, 3, seed=15)
    cfg = TrainConfig(epochs=2, **FAST)
    with pytest.raises(FileNotFoundError, match=r"trainer_state\.json"):
        Trainer(cfg).fit(MeanNet(), data, data, out_dir=tmp_path / "empty", resume=True)
    Trainer(TrainConfig(epochs=1, **FAST)).fit(MeanNet(), data, data, out_dir=tmp_path / "run")
    target = tmp_path / "run" / "last" / "optimizer.safetensors"
    target.write_bytes(target.read_bytes()[:30])
    with pytest.raises(DataError, match=r"optimizer\.safetensors"):
        Trainer(cfg).fit(MeanNet(), data, data, out_dir=tmp_path / "run", resume=True)


def test_resume_of_a_finished_run_trains_no_more(tmp_path: Path) -> None:
    data = make_batches(1, 4, 3, seed=16)
    cfg = TrainConfig(epochs=2, **FAST)
    first = Trainer(cfg).fit(MeanNet(), data, data, out_dir=tmp_path)
    rec = HistoryRecorder()
    second = Trainer(cfg, callbacks=[rec]).fit(MeanNet(), data, data, out_dir=tmp_path, resume=True)
    assert rec.epochs == [] and second.epochs_run == 2 and second.history == first.history


def test_no_pickle_in_the_training_code() -> None:
    import mmfuse.train as pkg

    root = Path(pkg.__file__).parent
    banned = ("import pickle", "pickle.", "torch." + "save", "torch." + "load", "weights_only")
    for path in root.glob("*.py"):
        text = path.read_text()
        assert not [b for b in banned if b in text], path


class _InterruptAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_checkpoint_every_writes_less_and_resumes_to_the_same_weights(toy_dataset: Any, tmp_path: Path) -> None:
    train, val = toy_dataset.split("train"), toy_dataset.split("val")
    cfg = TrainConfig(epochs=5, batch_size=8, lr=5e-3, monitor="loss", seed=2, device=DEVICE, checkpoint_every=2)
    straight = _model(1)
    full = Trainer(cfg).fit(straight, train, val, out_dir=tmp_path / "a")
    state = json.loads((tmp_path / "a" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 5  # the last epoch is always written
    assert json.loads((tmp_path / "a" / "history.json").read_text()) == full.history
    assert _weights_equal(load_model(tmp_path / "a"), straight, atol=0)  # the best weights, written from memory

    with pytest.raises(KeyboardInterrupt):  # after epoch 3: the latest checkpoint is epoch 2's
        Trainer(cfg, callbacks=[_InterruptAt(3)]).fit(_model(1), train, val, out_dir=tmp_path / "b")
    assert json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())["epoch"] == 2
    resumed = _model(99)
    again = Trainer(cfg).fit(resumed, train, val, out_dir=tmp_path / "b", resume=True)
    assert _weights_equal(straight, resumed, atol=1e-6)
    assert _without_seconds(again.history) == _without_seconds(full.history)


def test_checkpoint_every_is_validated() -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=0)
