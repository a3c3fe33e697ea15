"""Tiny models and synthetic batches shared by the tests of mmfuse.train."""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.types import Batch


def make_batch(
    n: int,
    t: int,
    *,
    seed: int,
    lengths: list[int] | None = None,
    step_labels: bool = False,
    regression: bool = False,
    offset: int = 0,
) -> Batch:
    """A learnable toy batch: the class is the sign of the mean of feature 0 of modality ``a``.

    Modality ``a`` ``[n, t, 3]`` carries the signal, ``b`` ``[n, t, 2]`` is noise. Sequences shorter than ``t``
    are padded (zeros, masks False, step targets -100).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (y * 2 - 1).float()  # [n]
    a = torch.randn(n, t, 3, generator=g) * 0.3
    a[:, :, 0] += sign[:, None]
    b = torch.randn(n, t, 2, generator=g)
    lengths = lengths or [t] * n
    pad = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # [n, t]
    a = torch.where(pad[..., None], a, torch.zeros(()))
    b = torch.where(pad[..., None], b, torch.zeros(()))
    if regression:
        targets = a[:, :, 0] if step_labels else a[:, :, 0].sum(1) / pad.sum(1)
        targets = targets.float()
    elif step_labels:
        targets = torch.where(pad, y[:, None].expand(n, t), torch.full((), -100))
    else:
        targets = y
    return Batch(
        inputs={"a": a, "b": b},
        masks={"a": pad.clone(), "b": pad.clone()},
        padding_mask=pad,
        targets=targets,
        ids=[f"s{offset + i}" for i in range(n)],
        groups=["g"] * n,
    )


def make_batches(n_batches: int, batch_size: int, t: int, *, seed: int, **kw: object) -> list[Batch]:
    return [
        make_batch(batch_size, t, seed=seed * 1000 + i, offset=i * batch_size, **kw)  # type: ignore[arg-type]
        for i in range(n_batches)
    ]


class MeanNet(nn.Module):
    """Masked mean over time of both modalities -> dropout -> linear (sample level) or per-step linear."""

    def __init__(self, out_dim: int = 2, step: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.step = step
        self.proj = nn.Linear(5, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(8, out_dim)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = torch.cat([batch.inputs["a"], batch.inputs["b"]], dim=-1)  # [B, T, 5]
        h = self.drop(torch.relu(self.norm(self.proj(x))))  # [B, T, 8]
        if self.step:
            return self.out(h)  # [B, T, C]
        m = batch.padding_mask.unsqueeze(-1).float()  # [B, T, 1]
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, 8]
        return self.out(pooled)  # [B, C]
