"""A tiny model must learn a toy task in which one modality carries the label."""

from __future__ import annotations

import pytest
import torch

from mmfuse.fusion import list_fusions
from mmfuse.models import ModelConfig, build_model
from mmfuse.types import Batch


def toy_data(n: int, t: int, seed: int) -> tuple[Batch, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    padding = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    signal = torch.randn(n, t, 4, generator=g) * 0.5
    signal[..., 0] += (y.float() * 2 - 1).unsqueeze(1)  # the label shifts one feature of "signal"
    noise = torch.randn(n, t, 6, generator=g)
    masks = {"signal": padding.clone(), "noise": padding & (torch.rand(n, t, generator=g) > 0.3)}
    inputs = {
        "signal": torch.where(padding.unsqueeze(-1), signal, 0.0),
        "noise": torch.where(masks["noise"].unsqueeze(-1), noise, 0.0),
    }
    return Batch(inputs=inputs, masks=masks, padding_mask=padding, targets=y), y


@pytest.mark.parametrize("fusion", list_fusions())
def test_tiny_model_learns(fusion: str) -> None:
    torch.manual_seed(0)
    train, y = toy_data(128, 6, seed=1)
    test, y_test = toy_data(128, 6, seed=2)
    cfg = ModelConfig({"signal": 4, "noise": 6}, out_dim=2, fusion=fusion, hidden=16, dropout=0.0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(train), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        acc = (model(test).argmax(-1) == y_test).float().mean().item()
    assert acc > 0.9, acc
