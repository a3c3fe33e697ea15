"""Freezing parameters by name, unfreezing them at an epoch, parameter reports, and load_pretrained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from train_toys import make_batches

from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, build_model, parameter_report, save_model
from mmfuse.train import (
    Callback,
    HistoryRecorder,
    TrainConfig,
    Trainer,
    build_optimizer,
    frozen_parameters,
    load_pretrained,
    save_weights,
)

FAST = {"scheduler": "none", "patience": None, "device": "cpu", "restore_best": False}
FROZEN = ["encoders.a", "projections.a"]


def _model(seed: int = 0, hidden: int = 8, **kw: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=hidden, encoder="conv", **kw))


def _subset(model: nn.Module, prefixes: list[str]) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in model.named_parameters()
        if any(k == p or k.startswith(p + ".") for p in prefixes)
    }


class Snapshots(Callback):
    """Copies of the watched parameters after every epoch."""

    def __init__(self, model: nn.Module, prefixes: list[str]) -> None:
        self.model, self.prefixes = model, prefixes
        self.after: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        self.after.append(_subset(self.model, self.prefixes))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_parameters_stay_fixed_until_unfreeze_epoch_then_train() -> None:
    data = make_batches(3, 4, 3, seed=1)
    model = _model()
    start = _subset(model, FROZEN)
    others = _subset(model, ["encoders.b", "head_mlp"])
    snaps, other_snaps = Snapshots(model, FROZEN), Snapshots(model, ["encoders.b", "head_mlp"])
    cfg = TrainConfig(epochs=4, lr=1e-2, freeze=FROZEN, unfreeze_epoch=3, **FAST)
    Trainer(cfg, callbacks=[snaps, other_snaps]).fit(model, data, data)
    assert len(start) == 8  # projection linear + norm, conv encoder conv + norm: weight and bias each
    assert _same(snaps.after[0], start) and _same(snaps.after[1], start)  # epochs 1 and 2: frozen
    assert not _same(snaps.after[2], start)  # epoch 3: trains again
    assert all(not torch.equal(snaps.after[2][k], snaps.after[1][k]) for k in start)  # every one of them moved
    assert not _same(other_snaps.after[0], others)  # the rest trained from the first epoch
    # which parameters train is the model's own business again after the fit
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_for_the_whole_fit_without_unfreeze_epoch() -> None:
    data = make_batches(2, 4, 3, seed=2)
    model = _model()
    start = _subset(model, FROZEN)
    Trainer(TrainConfig(epochs=2, lr=1e-2, freeze=FROZEN, **FAST)).fit(model, data, data)
    assert _same(_subset(model, FROZEN), start)


def test_parameter_counts_in_result_and_history() -> None:
    data = make_batches(2, 4, 3, seed=3)
    model = _model()
    n_frozen = sum(p.numel() for p in _subset(model, FROZEN).values())
    total = sum(p.numel() for p in model.parameters())
    cfg = TrainConfig(epochs=3, freeze=FROZEN, unfreeze_epoch=2, **FAST)
    result = Trainer(cfg).fit(model, data, data)
    assert [(r["trainable_params"], r["frozen_params"]) for r in result.history] == [
        (total - n_frozen, n_frozen),
        (total, 0),
        (total, 0),
    ]
    assert result.parameters["start"]["trainable"] == total - n_frozen
    assert result.parameters["start"]["frozen"] == n_frozen
    assert result.parameters["after_unfreeze"] == parameter_report(model).to_dict()
    assert json.loads(json.dumps(result.to_dict()))["parameters"]["start"]["frozen"] == n_frozen

    plain = Trainer(TrainConfig(epochs=1, **FAST)).fit(_model(), data, data)
    assert plain.parameters["start"] == {**parameter_report(_model()).to_dict()}
    assert "after_unfreeze" not in plain.parameters
    assert plain.history[0]["frozen_params"] == 0


def test_unfrozen_groups_have_their_own_scaled_rate() -> None:
    model = _model()
    cfg = TrainConfig(lr=0.01, weight_decay=0.1, freeze=FROZEN, unfreeze_epoch=2, unfreeze_lr_scale=0.1)
    groups = build_optimizer(model, cfg).param_groups
    frozen_ids = {id(p) for p in _subset_params(model, FROZEN)}
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0, 0.1, 0.0]
    assert {id(p) for g in groups[2:] for p in g["params"]} == frozen_ids
    assert not frozen_ids & {id(p) for g in groups[:2] for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _subset_params(model: nn.Module, prefixes: list[str]) -> list[nn.Parameter]:
    return [p for _, p in frozen_parameters(model, prefixes)]


def test_unfreeze_lr_scale_is_applied_after_unfreezing() -> None:
    seen: list[list[float]] = []

    class Rates(Callback):
        def on_batch_end(self, batch: int, logs: Any) -> None:
            seen.append([g["lr"] for g in optimizer_ref[0].param_groups])

    optimizer_ref: list[torch.optim.Optimizer] = []
    original = torch.optim.AdamW.__init__

    def capture(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        optimizer_ref.append(self)

    data = make_batches(1, 4, 3, seed=4)
    cfg = TrainConfig(
        epochs=3,
        lr=0.1,
        scheduler="cosine",
        warmup_epochs=0,
        freeze=FROZEN,
        unfreeze_epoch=2,
        unfreeze_lr_scale=0.5,
        patience=None,
        device="cpu",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "__init__", capture)
        Trainer(cfg, callbacks=[Rates()]).fit(_model(), data, data)
    # the schedule moves every group; the once-frozen ones stay at half the rate
    for rates in seen:
        assert rates[2] == pytest.approx(rates[0] * 0.5) and rates[3] == pytest.approx(rates[0] * 0.5)
    assert seen[0][0] > seen[-1][0]


def test_unknown_prefix_lists_the_top_level_names() -> None:
    with pytest.raises(ValueError) as info:
        Trainer(TrainConfig(epochs=1, freeze=["encoder.a"], **FAST)).fit(_model(), make_batches(1, 4, 3, seed=5))
    message = str(info.value)
    assert "'encoder.a'" in message and "'freeze'" in message
    for name in ("encoders", "projections", "fusion", "head_mlp"):
        assert f"'{name}'" in message
    # a prefix matches whole name components only
    with pytest.raises(ValueError, match=r"'encoders\.a2'"):
        frozen_parameters(_model(), ["encoders.a2"])
    assert {n for n, _ in frozen_parameters(_model(), ["encoders.a."])} == set(_subset(_model(), ["encoders.a"]))


def test_freezing_everything_is_refused() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(model, TrainConfig(freeze=["weight", "bias"], unfreeze_epoch=2))


class _Interrupt(Callback):
    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        if epoch == 2:
            raise KeyboardInterrupt


def test_resume_across_the_unfreeze_epoch_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = make_batches(3, 4, 3, seed=6)
    cfg = TrainConfig(
        epochs=4,
        lr=1e-2,
        freeze=FROZEN,
        unfreeze_epoch=3,
        unfreeze_lr_scale=0.5,
        scheduler="cosine",
        patience=None,
        device="cpu",
        restore_best=False,
    )
    straight = _model(1)
    full = Trainer(cfg).fit(straight, data, data, out_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, callbacks=[_Interrupt()]).fit(_model(1), data, data, out_dir=tmp_path / "b")
    resumed = _model(7)
    rec = HistoryRecorder()
    again = Trainer(cfg, callbacks=[rec]).fit(resumed, data, data, out_dir=tmp_path / "b", resume=True)
    assert [logs["epoch"] for logs in rec.epochs] == [3, 4]
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6, rtol=0) for k in sa)
    assert [r["frozen_params"] for r in again.history] == [r["frozen_params"] for r in full.history]
    assert again.parameters == full.parameters


# -- load_pretrained ---------------------------------------------------------------------------------------------
def test_load_pretrained_copies_encoders_and_projections_only(tmp_path: Path) -> None:
    source = _model(1, fusion="gated")
    save_model(source, tmp_path / "src")
    target = _model(2)  # another fusion: the encoders and projections have the same names and shapes
    before = {k: v.clone() for k, v in target.state_dict().items()}
    copied = load_pretrained(target, tmp_path / "src")
    assert copied == sorted(copied) and copied
    assert all(name.startswith(("projections.", "encoders.")) for name in copied)
    expected = {k for k in target.state_dict() if k.startswith(("projections.", "encoders."))}
    assert set(copied) == expected
    src_state, new_state = source.state_dict(), target.state_dict()
    for name in new_state:
        if name in expected:
            assert torch.equal(new_state[name], src_state[name]), name
        else:
            assert torch.equal(new_state[name], before[name]), name  # fusion and head untouched


def test_load_pretrained_with_include_and_a_safetensors_file(tmp_path: Path) -> None:
    source = _model(1)
    path = save_weights(source, tmp_path / "w.safetensors")
    target = _model(2)
    copied = load_pretrained(target, path, include=["encoders.b"])
    assert copied and all(n.startswith("encoders.b.") for n in copied)
    assert torch.equal(target.state_dict()[copied[0]], source.state_dict()[copied[0]])


def test_load_pretrained_shape_mismatch_names_the_tensor_and_shapes(tmp_path: Path) -> None:
    save_model(_model(1, hidden=8), tmp_path / "small")
    target = _model(2, hidden=16)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(DataError) as info:
        load_pretrained(target, tmp_path / "small")
    message = str(info.value)
    assert "'encoders.a." in message or "'projections.a." in message
    assert "[8" in message and "[16" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing half-copied
    # with strict_shapes=False mismatched tensors are skipped; here every one mismatches: nothing copied
    with pytest.raises(DataError, match="copied nothing"):
        load_pretrained(target, tmp_path / "small", strict_shapes=False)


def test_load_pretrained_skips_mismatched_shapes_when_asked(tmp_path: Path) -> None:
    save_model(_model(1), tmp_path / "m")
    torch.manual_seed(2)
    target = build_model(ModelConfig({"a": 4, "b": 2}, out_dim=2, hidden=8, encoder="conv"))  # 'a' is wider
    with pytest.raises(DataError, match=r"'projections\.a\.linear\.weight'.*\[8, 3\].*\[8, 4\]"):
        load_pretrained(target, tmp_path / "m")
    before = target.state_dict()["projections.a.linear.weight"].clone()
    copied = load_pretrained(target, tmp_path / "m", strict_shapes=False)
    assert "projections.a.linear.weight" not in copied and "projections.a.linear.bias" in copied
    assert "encoders.a.convs.0.weight" in copied
    assert torch.equal(target.state_dict()["projections.a.linear.weight"], before)


def test_load_pretrained_bad_sources(tmp_path: Path) -> None:
    save_model(_model(1), tmp_path / "m")
    unrelated = nn.ModuleDict({"encoders": nn.ModuleDict({"x": nn.Linear(3, 4)}), "keep": nn.Linear(2, 2)})
    with pytest.raises(DataError, match=r"copied nothing.*'encoders'"):
        load_pretrained(unrelated, tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=r"'source'.*nowhere"):
        load_pretrained(unrelated, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_pretrained(unrelated, tmp_path / "empty")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match=r"bad\.safetensors"):
        load_pretrained(unrelated, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="'include'"):
        load_pretrained(unrelated, tmp_path / "m", include=[""])
