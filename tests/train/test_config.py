from __future__ import annotations

import json

import pytest

from mmfuse.train import TrainConfig, monitor_mode


def test_round_trip_through_json() -> None:
    cfg = TrainConfig(epochs=7, lr=3e-4, grad_clip=None, patience=None, scheduler="plateau", class_weights="balanced")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.grad_clip is None and again.scheduler == "plateau"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("epochs", True),
        ("batch_size", -1),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("weight_decay", -0.1),
        ("optimizer", "sgd"),
        ("scheduler", "step"),
        ("warmup_epochs", -1),
        ("grad_clip", 0.0),
        ("patience", 0),
        ("monitor", ""),
        ("mode", "up"),
        ("class_weights", "inverse"),
        ("label_smoothing", 1.0),
        ("seed", -3),
        ("device", "tpu"),
        ("num_workers", -1),
        ("deterministic", "yes"),
        ("plateau_factor", 1.5),
    ],
)
def test_bad_values_name_the_field_and_the_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})  # type: ignore[arg-type]
    message = str(info.value)
    assert f"'{field}'" in message and "TrainConfig" in message
    assert repr(value) in message


def test_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="epochz"):
        TrainConfig.from_dict({"epochz": 3})


def test_monitor_direction() -> None:
    assert TrainConfig(monitor="accuracy").resolved_mode("classification") == "max"
    assert TrainConfig(monitor="loss").resolved_mode("classification") == "min"
    assert TrainConfig().resolved_monitor("classification") == "f1_weighted"
    assert TrainConfig().resolved_mode("regression") == "min"  # auto -> mae
    assert TrainConfig(monitor="mae", mode="max").resolved_mode("regression") == "max"  # explicit wins
    assert monitor_mode("val_f1_macro") == "max"


def test_unknown_monitor_needs_explicit_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(monitor="my_score")
    assert TrainConfig(monitor="my_score", mode="max").resolved_mode("classification") == "max"
