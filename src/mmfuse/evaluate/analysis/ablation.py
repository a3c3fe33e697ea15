"""Modality ablation: every non-empty subset of modalities, masked at test time, and temporal context off.

Masking a modality marks it missing at every step (values zeroed, mask False), exactly as a recording without
that stream would arrive, so every fusion sees it through the availability masks it already honours. "Context
off" cuts every sequence into one-step sequences, so step-level models see each step without its neighbours.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from mmfuse.types import Batch

__all__ = ["modality_subsets", "remove_context", "subset_label"]


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """All ``2^M - 1`` non-empty subsets, smallest first, each in the given order.

    Example:
        >>> modality_subsets(["audio", "text"])
        [('audio',), ('text',), ('audio', 'text')]
    """
    names = list(modalities)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"The 'modalities' of modality_subsets must be non-empty and unique. Got {names!r}.")
    return [c for k in range(1, len(names) + 1) for c in itertools.combinations(names, k)]


def subset_label(subset: Sequence[str]) -> str:
    """``"audio+text"``: the column name of a subset.

    Example:
        >>> subset_label(("audio", "text"))
        'audio+text'
    """
    return "+".join(subset)


def remove_context(batch: Batch) -> Batch:
    """Cut every sequence into one-step sequences: ``[B, T, D] -> [S, 1, D]`` over the ``S`` real steps.

    Rows keep the order of the real steps (sequence by sequence), so labelled rows line up with the full batch's.

    Example:
        >>> pad = torch.tensor([[True, True], [True, False]])
        >>> x = torch.arange(4.0).reshape(2, 2, 1)
        >>> b = Batch({"a": x}, {"a": pad.clone()}, pad, torch.tensor([[0, 1], [1, -100]]))
        >>> out = remove_context(b)
        >>> out.inputs["a"].flatten().tolist(), out.targets.flatten().tolist()
        ([0.0, 1.0, 2.0], [0, 1, 1])
    """
    pad = batch.padding_mask  # [B, T]
    inputs = {m: x[pad].unsqueeze(1) for m, x in batch.inputs.items()}  # [S, 1, D_m]
    masks = {m: k[pad].unsqueeze(1) for m, k in batch.masks.items()}  # [S, 1]
    s = int(pad.sum())
    targets = None if batch.targets is None else batch.targets[pad].unsqueeze(1)  # [S, 1, ...]
    b_idx = torch.nonzero(pad)[:, 0].tolist()
    ids = [batch.ids[i] for i in b_idx] if len(batch.ids) == pad.shape[0] else []
    groups = [batch.groups[i] for i in b_idx] if len(batch.groups) == pad.shape[0] else []
    context = {k: v.repeat_interleave(pad.sum(dim=1)) for k, v in batch.context.items()}  # [B] -> [S]
    return Batch(inputs, masks, torch.ones(s, 1, dtype=torch.bool), targets, ids, groups, context)
