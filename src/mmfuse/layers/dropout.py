"""Dropout that draws exactly the masks torch's dropout draws on CPU, in about half the time.

On CPU, ``torch.nn.functional.dropout`` makes its keep mask with ``bernoulli_(1 - p)``, which takes one 64-bit
draw of the default generator per element through a per-element distribution object: about 7 ns an element,
the largest single cost of a training step in the attention fusions (a ``[32, 10, 50, 50]`` attention-weight
dropout takes 6 ms, the matrix products around it less). ``torch.rand`` in float64 takes the same 64-bit draws,
in the same order, and maps each to the same uniform number that ``bernoulli_`` compares with ``1 - p``, so
``rand64 < 1 - p`` is the same mask and leaves the generator in the same state. :func:`dropout` builds the
mask that way and scales it as torch does (``mask / (1 - p)`` in the input's dtype, then one product), so its
output, its gradient and every later random draw are bit-for-bit those of ``F.dropout``; the test suite checks
it over sizes, dtypes and probabilities.

Everywhere the equivalence is not established it simply calls ``F.dropout``: on other devices (CUDA's
fused dropout draws from Philox), while ``torch.compile``, ``torch.export`` or ``torch.jit`` traces, for tensor
subclasses (the compilers have their own dropout; :func:`~mmfuse.layers.masking.eager_cpu`), in evaluation mode,
for ``p`` of 0 or 1, and for tensors too small for the saving to pay for the extra calls.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmfuse.layers.masking import eager_cpu

__all__ = ["Dropout", "dropout"]

MIN_FAST_NUMEL = 4096
"""Below this many elements the mask is cheap either way and ``F.dropout`` (fewer calls) is used."""

DRAW_CHUNK = 1 << 18
"""Uniforms drawn per call (2 MiB of float64): a large mask is drawn in chunks of this size."""


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)``, with the same draws and result, faster on CPU (see the module docstring).

    Args:
        x: Any floating-point tensor.
        p: Probability of zeroing an element, in ``[0, 1]``.
        training: Apply dropout (False returns ``x``).

    Returns:
        ``x`` with each element zeroed with probability ``p`` and the rest scaled by ``1 / (1 - p)``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> a = dropout(torch.ones(64, 64), 0.25)
        >>> _ = torch.manual_seed(0)
        >>> torch.equal(a, F.dropout(torch.ones(64, 64), 0.25))
        True
    """
    if not (training and 0.0 < p < 1.0 and x.numel() >= MIN_FAST_NUMEL and x.is_floating_point() and eager_cpu(x)):
        return F.dropout(x, p, training)
    keep = 1.0 - p
    noise = torch.empty(x.shape, dtype=x.dtype)  # [*x.shape], as F.dropout's: 1 / keep where kept, else 0
    flat = noise.view(-1)
    # The float64 draws are made a chunk at a time: consecutive calls continue one stream, so the mask is the same,
    # and a bounded scratch buffer is reused by the allocator instead of mapping fresh pages for every call.
    for start in range(0, flat.numel(), DRAW_CHUNK):
        part = flat[start : start + DRAW_CHUNK]
        part.copy_(torch.rand(part.numel(), dtype=torch.float64).lt_(keep))  # 1.0 = kept: bernoulli_(keep)'s draws
    return x * noise.div_(keep)


class Dropout(nn.Dropout):
    """``nn.Dropout`` computed by :func:`dropout`: the same module (name, ``p``, ``repr``), the same draws, faster.

    Example:
        >>> Dropout(0.3)
        Dropout(p=0.3, inplace=False)
    """

    def forward(self, input: Tensor) -> Tensor:
        """Dropout of ``input`` (in place is not offered: ``inplace=True`` falls back to torch's own)."""
        if self.inplace:
            return super().forward(input)
        return dropout(input, self.p, self.training)
