"""Tensor fusions: the full outer product of the modalities (TFN) and its low-rank factorisation (LMF)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.fusion._checks import check_int, check_probability
from mmfuse.fusion.base import Fusion
from mmfuse.fusion.registry import register_fusion
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.masking import zero_missing
from mmfuse.layers.mlp import MLP, make_activation

__all__ = ["LowRankFusion", "TensorFusion"]

# Einsum subscripts for the modality axes ("b" and "t" are the batch and time axes).
_AXES = "acdefghijklmnopqrsuvwxyz"


def _append_one(x: Tensor) -> Tensor:
    """``[..., D] -> [..., D + 1]`` with a constant 1 as the last feature."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


@register_fusion("tfn")
class TensorFusion(Fusion):
    """Tensor Fusion Network (Zadeh et al., 2017): an MLP over the outer product of all modalities.

    At every step each modality is projected to a small embedding ``h_m = act(W_m x_m + b_m)`` of size
    ``d_m`` (``factor_dim``), a constant 1 is appended (``z_m = [h_m; 1]``, size ``d_m + 1``), and the outer
    product of all ``z_m`` is taken (one einsum over the whole ``[B, T]`` grid)::

        Z[i_1, ..., i_M] = z_1[i_1] * z_2[i_2] * ... * z_M[i_M]

    Thanks to the appended 1, ``Z`` holds every unimodal term (``h_m`` itself), every bimodal product
    (``h_m ⊗ h_k``), ..., up to the full ``M``-modal product. ``Z`` is flattened to ``prod_m (d_m + 1)``
    features (``(d + 1) ** M`` with one ``d`` for all) and an MLP (``num_layers`` hidden layers of size
    ``hidden``, the published "inference subnetwork") maps it to ``out_dim``.

    Missing modalities: where ``m`` is missing, ``h_m`` is set to the zero vector (after the projection, so the
    projection's bias does not leak in), so ``z_m = [0, ..., 0, 1]``. Every term of ``Z`` involving ``h_m``
    vanishes and the remaining entries (those at index ``i_m = d_m``) are exactly the outer product of the
    other modalities: the output is the MLP of the other modalities' terms alone. With every modality missing,
    ``Z`` is 1 at its last entry and 0 elsewhere (a fixed, finite output). Pointwise in time, hence causal.

    The fused tensor grows as ``(d + 1) ** M``; construction refuses sizes above ``max_tensor_size``. The
    published model used ``d = 128`` for language and ``32`` for audio and video: a tensor of
    ``129 * 33 * 33 = 140481`` features (pass ``factor_dim={"text": 128, "audio": 32, "video": 32}`` and a larger
    ``max_tensor_size``); the default ``d = 16`` keeps three modalities at ``17 ** 3 = 4913``.

    Reference: A. Zadeh, M. Chen, S. Poria, E. Cambria, L.-P. Morency. "Tensor Fusion Network for Multimodal
    Sentiment Analysis." EMNLP 2017.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        factor_dim: Size ``d_m`` of each modality's embedding before the product: one int for all modalities,
            or a mapping modality name -> size.
        hidden: Width of the MLP's hidden layers.
        num_layers: Number of hidden layers of the MLP (0: one linear layer from the tensor to ``out_dim``).
        activation: Activation of the projections and the MLP (a name from :data:`mmfuse.layers.ACTIVATIONS`).
        dropout: Dropout on the flattened tensor and after each hidden layer of the MLP.
        max_tensor_size: The largest ``prod_m (d_m + 1)`` accepted.

    Raises:
        ValueError: for a non-positive size, a ``factor_dim`` mapping without exactly the modalities, a bad
            dropout or activation, or ``prod_m (d_m + 1)`` above ``max_tensor_size`` (naming both numbers).

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> ``z_m`` ``[B, T, d_m + 1]`` -> ``Z`` ``[B, T, prod_m (d_m + 1)]`` ->
        ``[B, T, out_dim]``. ``forward_with_weights`` returns None as weights (no modality weighting).

    Example:
        >>> fusion = TensorFusion({"audio": 3, "text": 5}, out_dim=8, factor_dim=4)
        >>> fusion.tensor_size  # (4 + 1) ** 2
        25
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5)}
        >>> m = {"audio": torch.ones(2, 6, dtype=torch.bool), "text": torch.zeros(2, 6, dtype=torch.bool)}
        >>> z = fusion.fusion_tensor(x, m).view(2, 6, 5, 5)  # [B, T, audio index, text index]
        >>> bool((z[..., :4] == 0).all()), bool((z[..., 4, 4] == 1).all())  # "text" missing: only [h_audio; 1]
        (True, True)
        >>> fusion(x, m).shape
        torch.Size([2, 6, 8])
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        out_dim: int,
        *,
        factor_dim: int | Mapping[str, int] = 16,
        hidden: int = 128,
        num_layers: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        max_tensor_size: int = 100_000,
    ) -> None:
        super().__init__(modality_dims, out_dim)
        owner = "TensorFusion"
        if isinstance(factor_dim, Mapping):
            if set(factor_dim) != set(self.modalities):
                raise ValueError(
                    f"The 'factor_dim' parameter of {owner} must be an int or a mapping with exactly the modalities "
                    f"{list(self.modalities)}. Got the keys {sorted(factor_dim)} instead."
                )
            dims = {m: check_int(owner, f"factor_dim[{m}]", factor_dim[m]) for m in self.modalities}
        else:
            dims = dict.fromkeys(self.modalities, check_int(owner, "factor_dim", factor_dim))
        check_int(owner, "hidden", hidden)
        check_int(owner, "num_layers", num_layers, minimum=0)
        check_int(owner, "max_tensor_size", max_tensor_size)
        dropout = check_probability(owner, "dropout", dropout)
        n = self.num_modalities
        size = math.prod(d + 1 for d in dims.values())
        if size > max_tensor_size or n > len(_AXES):
            uniform = len(set(dims.values())) == 1
            formula = (
                f"(factor_dim + 1) ** M = ({dims[self.modalities[0]]} + 1) ** {n}"
                if uniform
                else "prod_m (factor_dim[m] + 1) = " + " * ".join(str(d + 1) for d in dims.values())
            )
            raise ValueError(
                f"The fused tensor of {owner} would have {formula} = {size} features per step, more than "
                f"max_tensor_size = {max_tensor_size}. Lower 'factor_dim', fuse fewer modalities, or raise "
                "'max_tensor_size'."
            )
        self.factor_dims: dict[str, int] = dims
        self.tensor_size = size
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Linear(self.modality_dims[m], dims[m]), make_activation(activation))
            for m in self.modalities
        )
        axes = _AXES[:n]
        self._equation = ",".join(f"bt{a}" for a in axes) + f"->bt{axes}"  # e.g. "bta,btc,btd->btacd"
        self.dropout = Dropout(dropout)
        self.mlp = MLP(size, (hidden,) * num_layers, out_dim, activation=activation, dropout=dropout)

    def extra_repr(self) -> str:
        """Sizes of the product, shown in ``repr``."""
        return f"{super().extra_repr()}, factor_dims={self.factor_dims}, tensor_size={self.tensor_size}"

    def _tensor(self, values: list[Tensor], masks: list[Tensor]) -> Tensor:
        zs = [  # M x [B, T, d_m + 1]; a missing modality is [0, ..., 0, 1]
            _append_one(zero_missing(proj(x), mask)) for proj, x, mask in zip(self.proj, values, masks, strict=True)
        ]
        z = torch.einsum(self._equation, *zs)  # [B, T, d_1 + 1, ..., d_M + 1]
        return z.flatten(start_dim=2)  # [B, T, prod_m (d_m + 1)], row-major over the canonical modality order

    def fusion_tensor(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> Tensor:
        """The flattened outer product ``Z`` the MLP reads, for inspection.

        Args:
            inputs: Modality name -> ``[B, T, D_m]``.
            masks: Modality name -> bool ``[B, T]``, True where the modality is present.

        Returns:
            ``[B, T, prod_m (d_m + 1)]``: ``Z`` flattened row-major, the first axis being the first modality in
            canonical (sorted) order; ``.view(B, T, d_1 + 1, ..., d_M + 1)`` recovers the axes.

        Raises:
            ValueError: on malformed inputs (see :meth:`Fusion.prepare`).
        """
        values, present = self.prepare(inputs, masks)
        return self._tensor(values, present)

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Outer product of the ``[h_m; 1]`` and the MLP over it (see the class docstring)."""
        return self.mlp(self.dropout(self._tensor(values, masks))), None  # [B, T, out_dim]


@register_fusion("lmf")
class LowRankFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al., 2018): the TFN tensor product with a rank-``r`` weight.

    TFN applies one weight tensor ``W`` of shape ``[D_1 + 1, ..., D_M + 1, out_dim]`` to the outer product of
    the ``z_m = [x_m; 1]``. LMF writes that weight as a sum of ``r = rank`` products of per-modality factors
    ``W_m`` of shape ``[r, D_m + 1, out_dim]``, scaled by learned rank weights ``w_r``::

        W = sum_r w_r * W_1[r] ⊗ W_2[r] ⊗ ... ⊗ W_M[r]   (outer over the input axes, shared over out_dim)

    so the product never has to be formed: at every step each modality gives ``a_m[r] = z_m W_m[r]``
    (``[r, out_dim]``), and::

        out = sum_r w_r * (a_1[r] * a_2[r] * ... * a_M[r]) + bias

    which is exactly ``W`` applied to ``z_1 ⊗ ... ⊗ z_M``, at a cost linear in ``M``. The factors act on the
    fusion's inputs directly (the model's encoders play the paper's modality subnetworks).

    Missing modalities: the base class zeroes ``x_m``, so ``z_m = [0, ..., 0, 1]`` as in
    :class:`TensorFusion`: ``a_m[r]`` is the last row of ``W_m[r]`` and every term of the product involving
    ``x_m`` vanishes. With every modality missing the output is a fixed finite vector. Pointwise in time, hence
    causal.

    Reference: Z. Liu, Y. Shen, V. B. Lakshminarasimhan, P. P. Liang, A. Zadeh, L.-P. Morency. "Efficient
    Low-rank Multimodal Fusion with Modality-Specific Factors." ACL 2018.

    Args:
        modality_dims: Modality name -> ``D_m``.
        out_dim: Output size.
        rank: The rank ``r`` of the factorisation.
        dropout: Dropout on the output.

    Raises:
        ValueError: for a non-positive ``rank`` or a bad ``dropout``.

    Shapes:
        ``inputs[m]`` ``[B, T, D_m]`` -> ``a_m`` ``[B, T, r, out_dim]`` -> product ``[B, T, r, out_dim]`` ->
        ``[B, T, out_dim]``. ``forward_with_weights`` returns None as weights (no modality weighting).
        Parameters: ``r * sum_m (D_m + 1) * out_dim + r + out_dim``.

    Example:
        >>> fusion = LowRankFusion({"audio": 3, "text": 5}, out_dim=8, rank=2)
        >>> [tuple(f.shape) for f in fusion.factors]  # [rank, D_m + 1, out_dim], canonical order
        [(2, 4, 8), (2, 6, 8)]
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5)}
        >>> m = {"audio": torch.ones(2, 6, dtype=torch.bool), "text": torch.zeros(2, 6, dtype=torch.bool)}
        >>> fusion(x, m).shape
        torch.Size([2, 6, 8])
    """

    def __init__(self, modality_dims: Mapping[str, int], out_dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modality_dims, out_dim)
        check_int("LowRankFusion", "rank", rank)
        dropout = check_probability("LowRankFusion", "dropout", dropout)
        self.rank = rank
        # Each a_m[r, o] = sum_i z_m[i] W_m[r, i, o] has variance about 1 for unit-variance inputs, so the product
        # over modalities stays of order 1 whatever M is.
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(rank, d + 1, out_dim) / math.sqrt(d + 1)) for d in self.modality_dims.values()
        )
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / math.sqrt(rank)))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.dropout = Dropout(dropout)

    def extra_repr(self) -> str:
        """Sizes and rank, shown in ``repr``."""
        return f"{super().extra_repr()}, rank={self.rank}"

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Per-modality factors, their product over modalities, the weighted sum over rank (see the class)."""
        # [x; 1] @ W[r] without building [x; 1]: the features' rows plus the last (constant) row.
        parts = [  # M x [B, T, r, out_dim]
            torch.einsum("btd,rdo->btro", x, w[:, :-1]) + w[:, -1] for w, x in zip(self.factors, values, strict=True)
        ]
        product = parts[0]
        for a in parts[1:]:
            product = product * a  # [B, T, r, out_dim]
        fused = torch.einsum("btro,r->bto", product, self.rank_weights) + self.bias  # [B, T, out_dim]
        return self.dropout(fused), None
