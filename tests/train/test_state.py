from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mmfuse.errors import DataError
from mmfuse.train._state import flatten_state, read_json, read_tensors, unflatten_state, write_json, write_tensors


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return type(a) is type(b) and a == b


def test_adamw_state_round_trips_exactly(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    opt = torch.optim.AdamW(
        [{"params": model[0].parameters(), "weight_decay": 0.1}, {"params": model[1].parameters()}], lr=0.01
    )
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
    state = opt.state_dict()
    tensors, skeleton = flatten_state(state)
    write_tensors(tmp_path / "o.safetensors", tensors)
    write_json(tmp_path / "o.json", skeleton)
    back = unflatten_state(read_tensors(tmp_path / "o.safetensors")[0], read_json(tmp_path / "o.json"))
    assert _same(state, back)
    assert isinstance(back["param_groups"][0]["betas"], tuple)
    assert set(back["state"]) == set(state["state"]) and all(isinstance(k, int) for k in back["state"])


def test_plateau_scheduler_state_with_infinity_round_trips(tmp_path: Path) -> None:
    opt = torch.optim.AdamW(nn.Linear(1, 1).parameters())
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min")
    state = sched.state_dict()
    assert math.isinf(state["best"])
    tensors, skeleton = flatten_state(state)
    write_json(tmp_path / "s.json", skeleton)  # strict JSON: inf must have been encoded
    assert "Infinity" not in (tmp_path / "s.json").read_text()
    assert _same(state, unflatten_state(tensors, read_json(tmp_path / "s.json")))


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        flatten_state({"x": object()})


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors"):
        read_tensors(tmp_path / "nothing.safetensors")
    path = write_tensors(tmp_path / "w.safetensors", {"a": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:40])  # truncate
    with pytest.raises(DataError, match=r"w\.safetensors"):
        read_tensors(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json"):
        read_json(tmp_path / "bad.json")


def test_a_checkpoint_that_cannot_be_written_leaves_no_half_written_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mmfuse.train import checkpoint

    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    args = dict(
        model=model, optimizer=optimizer, best_state=None, scheduler=None, rng_tensors={}, rng_info={}, trainer_state={}
    )
    first = checkpoint.save_last_checkpoint(tmp_path, epoch=1, **args)  # type: ignore[arg-type]
    before = sorted(p.name for p in first.iterdir())

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_state", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_last_checkpoint(tmp_path, epoch=2, **args)  # type: ignore[arg-type]
    assert not (tmp_path / "last.tmp").exists()
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == before  # the previous checkpoint is intact
