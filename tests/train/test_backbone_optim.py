"""A pretrained backbone inside the model: its own rate and weight decay, freeze -> unfreeze in the Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmfuse.layers.pretrained import PretrainedTextEncoder, backbone_parameter_groups, decay_exempt_parameters
from mmfuse.models import ModelConfig, build_model
from mmfuse.train import Callback, TrainConfig, Trainer, build_optimizer
from mmfuse.types import Batch

L = 6
BACKBONE = "pretrained.text.backbone"


def _model(folder: Path, trainable: bool = True) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        {"audio": 2, "text": L},
        out_dim=2,
        hidden=8,
        encoder="none",
        pretrained={"text": {"source": str(folder), "trainable": trainable}},
    )
    return build_model(cfg)


def _batches(folder: Path) -> list[Batch]:
    enc = PretrainedTextEncoder(folder)
    texts = ["good movie", "bad movie", "really funny", "not funny", "sad part", "a lot of good"]
    ids = enc.tokenizer(texts, padding="max_length", max_length=L, truncation=True, return_tensors="pt")["input_ids"]
    ids = ids.float().view(3, 2, L)  # [B, T, L]
    ones = torch.ones(3, 2, dtype=torch.bool)
    audio = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0))
    return [Batch({"text": ids, "audio": audio}, {"text": ones, "audio": ones}, ones, torch.tensor([1, 0, 1]))]


def _backbone_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in model.get_submodule(BACKBONE).parameters()}


def test_backbone_groups_get_their_own_rate_and_decay(tiny_bert: Path) -> None:
    model = _model(tiny_bert)
    cfg = TrainConfig(lr=1e-3, weight_decay=0.01, backbone_lr=2e-5, backbone_weight_decay=0.1)
    groups = {g["name"]: g for g in build_optimizer(model, cfg).param_groups}
    assert {k: (g["lr"], g["weight_decay"]) for k, g in groups.items()} == {
        "rest": (1e-3, 0.01),
        "rest_no_decay": (1e-3, 0.0),
        "backbone": (2e-5, 0.1),
        "backbone_no_decay": (2e-5, 0.0),
    }
    inside = {id(p) for name in ("backbone", "backbone_no_decay") for p in groups[name]["params"]}
    assert inside == _backbone_ids(model)
    # the same no-decay rule as backbone_parameter_groups: one set of exempt parameters
    exempt = {id(p) for name in ("rest_no_decay", "backbone_no_decay") for p in groups[name]["params"]}
    assert exempt == decay_exempt_parameters(model)
    ref = backbone_parameter_groups(
        model, model.get_submodule(BACKBONE), lr=1e-3, weight_decay=0.01, backbone_lr=2e-5, backbone_weight_decay=0.1
    )
    assert {g["name"]: {id(p) for p in g["params"]} for g in ref} == {
        k: {id(p) for p in g["params"]} for k, g in groups.items()
    }
    # defaults: the backbone trains at the base rate and decay
    plain = {g["name"]: (g["lr"], g["weight_decay"]) for g in build_optimizer(model, TrainConfig(lr=0.1)).param_groups}
    assert plain["backbone"] == plain["rest"] == (0.1, 0.01)


def test_a_backbone_built_frozen_is_left_out_of_the_optimiser(tiny_bert: Path) -> None:
    model = _model(tiny_bert, trainable=False)
    names = [g["name"] for g in build_optimizer(model, TrainConfig(backbone_lr=1e-5)).param_groups]
    assert names == ["rest", "rest_no_decay"]


@pytest.mark.parametrize(("field", "value"), [("backbone_lr", 0.0), ("backbone_weight_decay", -1.0)])
def test_bad_backbone_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"'{field}' parameter of TrainConfig"):
        TrainConfig(**{field: value})


class _Watch(Callback):
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.backbone: list[torch.Tensor] = []

    def on_epoch_end(self, epoch: int, logs: object) -> None:
        weight = self.model.get_submodule(BACKBONE).embeddings.word_embeddings.weight
        self.backbone.append(weight.detach().clone())


def test_frozen_backbone_then_unfrozen_at_its_own_rate(tiny_bert: Path) -> None:
    model = _model(tiny_bert)
    start = model.get_submodule(BACKBONE).embeddings.word_embeddings.weight.detach().clone()
    watch = _Watch(model)
    cfg = TrainConfig(
        epochs=3,
        lr=1e-2,
        backbone_lr=1e-3,
        freeze=[BACKBONE],
        unfreeze_epoch=3,
        scheduler="none",
        patience=None,
        device="cpu",
        restore_best=False,
    )
    data = _batches(tiny_bert)
    Trainer(cfg, callbacks=[watch]).fit(model, data, data)
    assert torch.equal(watch.backbone[0], start) and torch.equal(watch.backbone[1], start)  # epochs 1-2: frozen
    moved = (watch.backbone[2] - start).abs().max()
    assert 0 < float(moved) <= 1.5e-3  # epoch 3: one AdamW step at backbone_lr moves a weight by about 1e-3
