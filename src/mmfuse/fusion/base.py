"""The :class:`Fusion` base class: validation, canonical modality order and NaN-safe masking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmfuse.layers.masking import zero_missing

__all__ = ["CAPABILITIES", "OUTPUT_LEVELS", "Fusion"]

CAPABILITIES = ("supports_compile", "supports_export", "handles_missing")
"""Capability flags that, when False, must come with a reason in :attr:`Fusion.limitations`."""

OUTPUT_LEVELS = ("representation", "prediction")
"""Values of :attr:`Fusion.output_level`."""


class Fusion(nn.Module):
    """Base class of every fusion: per-modality sequences in, one fused sequence out.

    A subclass implements :meth:`fuse`, which receives the inputs already validated, put in canonical
    (sorted-name) order and zeroed with ``torch.where`` wherever their mask is False. It never sees the
    values of a missing step, so NaN written there cannot reach the output or its gradient.

    Capabilities are attributes that the contract suite (:mod:`mmfuse.testing`) reads:

    * ``is_causal``: the output at step ``t`` depends only on steps ``<= t``. Pointwise fusions are causal
      by class; a fusion whose causality depends on its arguments sets it per instance in ``__init__``.
    * ``handles_missing``: masks are honoured (a missing modality contributes nothing).
    * ``supports_compile`` / ``supports_export``: ``torch.compile(fullgraph=True)`` / ``torch.export`` with a
      dynamic ``T`` work and agree with eager.
    * ``limitations``: capability or check name -> reason, required for every flag above set to False; the
      contract suite skips the matching check and reports the reason.
    * ``contract_variants``: keyword-argument sets the contract suite checks separately (e.g. a causal mode).
    * ``output_level``: ``"representation"`` (``out_dim`` is a feature size and the model puts its head after
      the fusion) or ``"prediction"`` (decision-level fusions: ``out_dim`` is the number of model outputs ``C``,
      the fused sequence is already the prediction, and the model adds no head after it).

    Args:
        modality_dims: Modality name -> feature size ``D_m``. The canonical order is the sorted names.
        out_dim: Output feature size.

    Shapes:
        ``forward(inputs, masks)``: ``inputs[m]`` ``[B, T, D_m]``, ``masks[m]`` bool ``[B, T]`` ->
        ``[B, T, out_dim]``.

    Example:
        >>> class SumFusion(Fusion):
        ...     def __init__(self, modality_dims, out_dim):
        ...         super().__init__(modality_dims, out_dim)
        ...         self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in self.modality_dims.values())
        ...     def fuse(self, values, masks):
        ...         return sum(p(x) for p, x in zip(self.proj, values)), None  # [B, T, out_dim]
        >>> fusion = SumFusion({"text": 5, "audio": 3}, out_dim=4)
        >>> fusion.modalities
        ('audio', 'text')
        >>> x = {"audio": torch.randn(2, 6, 3), "text": torch.randn(2, 6, 5)}
        >>> m = {k: torch.ones(2, 6, dtype=torch.bool) for k in x}
        >>> fusion(x, m).shape
        torch.Size([2, 6, 4])
    """

    is_causal: bool = True
    handles_missing: ClassVar[bool] = True
    supports_compile: ClassVar[bool] = True
    supports_export: ClassVar[bool] = True
    limitations: ClassVar[Mapping[str, str]] = {}
    contract_variants: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    output_level: ClassVar[str] = "representation"

    def __init__(self, modality_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        owner = type(self).__name__
        if not isinstance(modality_dims, Mapping) or not modality_dims:
            raise ValueError(
                f"The 'modality_dims' parameter of {owner} must be a non-empty mapping of modality name -> feature "
                f"size. Got {modality_dims!r} instead."
            )
        for name, dim in modality_dims.items():
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"The 'modality_dims' parameter of {owner} must have non-empty string keys. Got {name!r}."
                )
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise ValueError(
                    f"The 'modality_dims' parameter of {owner} must map each modality to a positive integer. "
                    f"Got {dim!r} for modality {name!r}."
                )
        if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
            raise ValueError(f"The 'out_dim' parameter of {owner} must be a positive integer. Got {out_dim!r} instead.")
        self.modalities: tuple[str, ...] = tuple(sorted(modality_dims))
        self.modality_dims: dict[str, int] = {m: int(modality_dims[m]) for m in self.modalities}
        self.out_dim = int(out_dim)

    @property
    def num_modalities(self) -> int:
        """``M``, the number of modalities."""
        return len(self.modalities)

    def extra_repr(self) -> str:
        """The modality sizes and output size, shown in ``repr``."""
        return f"modality_dims={self.modality_dims}, out_dim={self.out_dim}"

    def prepare(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Validate the inputs and return them in canonical order with missing steps zeroed.

        Returns:
            ``(values, masks)``: lists of ``M`` tensors ``[B, T, D_m]`` and bool ``[B, T]``.

        Raises:
            ValueError: on missing or unexpected modality keys, a wrong feature size, a mask of the wrong shape
                or dtype, or modalities that disagree on ``B`` or ``T``.
        """
        owner = type(self).__name__
        expected = set(self.modalities)
        for what, given in (("inputs", inputs), ("masks", masks)):
            keys = set(given)
            if keys != expected:
                missing, extra = sorted(expected - keys), sorted(keys - expected)
                raise ValueError(
                    f"The {what!r} of {owner}.forward must have exactly the modalities {list(self.modalities)}; "
                    f"missing {missing}, unexpected {extra}."
                )
        first = self.modalities[0]
        ref = inputs[first]
        values: list[Tensor] = []
        present: list[Tensor] = []
        for m in self.modalities:
            x, mask = inputs[m], masks[m]
            if x.dim() != 3 or x.shape[-1] != self.modality_dims[m]:
                raise ValueError(
                    f"The input of modality {m!r} to {owner} must have shape [B, T, {self.modality_dims[m]}]. "
                    f"Got {list(x.shape)} instead."
                )
            if x.shape[0] != ref.shape[0] or x.shape[1] != ref.shape[1]:
                raise ValueError(
                    f"The inputs to {owner} must share B and T: modality {m!r} has {list(x.shape[:2])}, "
                    f"modality {first!r} has {list(ref.shape[:2])}."
                )
            if mask.dtype != torch.bool:
                raise ValueError(f"The mask of modality {m!r} to {owner} must be bool. Got {mask.dtype} instead.")
            if mask.dim() != 2 or mask.shape[0] != x.shape[0] or mask.shape[1] != x.shape[1]:
                raise ValueError(
                    f"The mask of modality {m!r} to {owner} must have shape [B, T] = {list(x.shape[:2])}. "
                    f"Got {list(mask.shape)} instead."
                )
            values.append(zero_missing(x, mask))  # [B, T, D_m], exactly 0 where missing
            present.append(mask)
        return values, present

    def forward_with_weights(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """Fuse and also return the fusion's modality weights for inspection.

        Returns:
            ``(fused [B, T, out_dim], weights)`` where ``weights`` is fusion-specific (documented on each
            fusion; ``[B, T, M]`` over the canonical modality order for the per-modality fusions) or None.
        """
        values, present = self.prepare(inputs, masks)
        return self.fuse(values, present)

    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> Tensor:
        """Fuse per-modality sequences.

        Args:
            inputs: Modality name -> ``[B, T, D_m]``.
            masks: Modality name -> bool ``[B, T]``, True where the modality is present.

        Returns:
            ``[B, T, out_dim]``.
        """
        return self.forward_with_weights(inputs, masks)[0]

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """The fusion maths, on validated inputs in canonical order with missing steps zeroed.

        Args:
            values: ``M`` tensors ``[B, T, D_m]``.
            masks: ``M`` bool tensors ``[B, T]``.

        Returns:
            ``(fused [B, T, out_dim], weights or None)``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement Fusion.fuse.")
