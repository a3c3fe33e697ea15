"""The TrainConfig fields of one-cycle, modality-dropout ramps, freezing and mixed precision."""

from __future__ import annotations

import json

import pytest

from mmfuse.train import TrainConfig, ramp_factor


def test_new_fields_round_trip_through_json() -> None:
    cfg = TrainConfig(
        epochs=6,
        scheduler="onecycle",
        warmup_epochs=2,
        modality_dropout_schedule="cosine",
        modality_dropout_warmup_epochs=3,
        freeze=("encoders.a", "projections.a"),  # a tuple is stored as a list
        unfreeze_epoch=3,
        unfreeze_lr_scale=0.1,
        amp="bf16",
    )
    assert cfg.freeze == ["encoders.a", "projections.a"]
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    defaults = TrainConfig()
    assert (defaults.freeze, defaults.unfreeze_epoch, defaults.amp, defaults.modality_dropout_schedule) == (
        [],
        None,
        "auto",
        "constant",
    )
    assert TrainConfig().freeze is not TrainConfig().freeze  # no shared mutable default


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scheduler", "one-cycle"),
        ("modality_dropout_schedule", "step"),
        ("modality_dropout_warmup_epochs", -1),
        ("modality_dropout_warmup_epochs", 1.5),
        ("freeze", "encoders"),
        ("freeze", ["encoders", ""]),
        ("freeze", [3]),
        ("unfreeze_lr_scale", 0.0),
        ("unfreeze_lr_scale", float("inf")),
        ("amp", "fp32"),
        ("amp", True),
    ],
)
def test_bad_values_name_the_field_and_the_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})  # type: ignore[arg-type]
    message = str(info.value)
    assert f"'{field}'" in message and "TrainConfig" in message
    assert repr(value) in message


def test_unfreeze_epoch_checks() -> None:
    with pytest.raises(ValueError, match=r"'unfreeze_epoch'.*'freeze' is empty"):
        TrainConfig(unfreeze_epoch=2)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="'unfreeze_epoch'"):
            TrainConfig(freeze=["x"], unfreeze_epoch=bad)  # type: ignore[arg-type]
    assert TrainConfig(freeze=["x"], unfreeze_epoch=4).unfreeze_epoch == 4


def test_onecycle_warmup_must_leave_room_for_the_decay() -> None:
    with pytest.raises(ValueError, match=r"'warmup_epochs'.*onecycle"):
        TrainConfig(epochs=3, warmup_epochs=3, scheduler="onecycle")
    assert TrainConfig(epochs=3, warmup_epochs=3, scheduler="cosine").warmup_epochs == 3  # fine for cosine
    assert TrainConfig(epochs=3, warmup_epochs=0, scheduler="onecycle").warmup_epochs == 0


def test_ramp_factor_values() -> None:
    assert [ramp_factor("linear", e, 3) for e in range(5)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert [ramp_factor("cosine", e, 4) for e in range(5)] == pytest.approx([0, 0.1464466, 0.5, 0.8535534, 1])
    assert [ramp_factor("constant", e, 4) for e in range(3)] == [1.0, 1.0, 1.0]
    assert ramp_factor("linear", 0, 0) == 1.0  # no warm-up: the full rate from the start
    with pytest.raises(ValueError, match="'kind'"):
        ramp_factor("exp", 0, 2)
    with pytest.raises(ValueError, match="'epoch'"):
        ramp_factor("linear", -1, 2)
