"""Temporal encoders: give each step context from other steps of the same sequence.

All encoders map ``[B, T, H] -> [B, T, H]`` and respect the padding mask: appending padding steps to a
sequence never changes the outputs at its real steps (recurrent encoders use packed sequences; the
transformer masks padded keys; the convolution re-zeroes padded steps after every layer). A causal encoder
uses only steps up to ``t`` for the output at ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmfuse.layers._gru import gru_packed
from mmfuse.layers.attention import AttentionBlock, resolve_num_heads
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.masking import zero_missing

__all__ = [
    "ENCODERS",
    "ConvEncoder",
    "IdentityEncoder",
    "RNNEncoder",
    "TransformerEncoder",
    "make_encoder",
    "rename_legacy_keys",
]

ENCODERS = ("conv", "gru", "lstm", "none", "transformer")
"""The encoder names :func:`make_encoder` accepts."""


def _check_positive(owner: str, name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"The {name!r} parameter of {owner} must be a positive integer. Got {value!r} instead.")


class IdentityEncoder(nn.Module):
    """No temporal context: returns its input with padded steps zeroed.

    Example:
        >>> IdentityEncoder()(torch.ones(1, 2, 3), torch.tensor([[True, False]])).sum().item()
        3.0
    """

    is_causal = True

    def forward(self, x: Tensor, padding_mask: Tensor, present: Tensor | None = None) -> Tensor:
        """Return ``x`` ``[B, T, H]`` with steps outside ``padding_mask`` ``[B, T]`` zeroed."""
        return zero_missing(x, padding_mask)


class _StackedEncoder(nn.Module):
    """What every layered encoder shares: a checked ``num_layers``, the ``is_causal`` flag, the closing LayerNorm."""

    def __init__(self, dim: int, num_layers: int, causal: bool) -> None:
        super().__init__()
        _check_positive(type(self).__name__, "num_layers", num_layers)
        self.is_causal = causal
        self.norm = nn.LayerNorm(dim)


class RNNEncoder(_StackedEncoder):
    """A GRU or LSTM over the real steps of each sequence (packed), then LayerNorm; optionally residual.

    On the CPU a GRU runs through :func:`mmfuse.layers._gru.gru_packed` (the same arithmetic on the same packed
    steps as ``nn.GRU``, with a hand-written backward pass and far fewer operators); on other devices, under
    autocast (whose mixed precision is ``nn.GRU``'s own) and while compiling, through ``nn.GRU`` itself. Parameters
    and ``state_dict`` are those of the ``nn.GRU`` either way.

    With ``residual=True`` the output is ``LayerNorm(x + rnn(x))``: each step keeps its own features and the
    recurrent branch adds context. With ``residual=False`` it is ``LayerNorm(rnn(x))``, which forces every step
    through its context; on utterance-level sentiment (CMU-MOSI) this is worth about two points of accuracy,
    because the per-utterance features alone overfit.

    Bidirectional encoders give each direction ``H // 2`` units so the output size stays ``H``.

    Not exportable (``supports_export`` is False, reason in ``limitations``; :mod:`mmfuse.models.export` reads
    them): tracing unrolls the recurrence over the example's steps, so ``T`` cannot stay dynamic.

    Args:
        dim: Feature size ``H`` (input and output).
        cell: "gru" or "lstm".
        num_layers: Stacked recurrent layers.
        bidirectional: Read the sequence in both directions (not causal).
        dropout: Dropout between stacked layers and on the recurrent output.
        residual: Add the input to the recurrent output before the LayerNorm.

    Example:
        >>> enc = RNNEncoder(8, cell="gru")
        >>> enc(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 8])
    """

    supports_export: ClassVar[bool] = False
    limitations: ClassVar[dict[str, str]] = {
        "supports_export": "torch.export (and the ONNX exporter, which traces through it) unrolls the recurrence "
        "over the example's steps, so T cannot stay dynamic; train with encoder 'conv', 'transformer' or 'none' "
        "to export"
    }

    def __init__(
        self,
        dim: int,
        *,
        cell: str = "gru",
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        _check_positive("RNNEncoder", "dim", dim)
        super().__init__(dim, num_layers, causal=not bidirectional)
        if bidirectional and dim % 2:
            raise ValueError(f"The 'dim' parameter of a bidirectional RNNEncoder must be even. Got {dim} instead.")
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}.get(cell)
        if rnn_cls is None:
            raise ValueError(f"The 'cell' parameter of RNNEncoder must be 'gru' or 'lstm'. Got {cell!r} instead.")
        self.bidirectional = bidirectional
        self.residual = residual
        self.rnn = rnn_cls(
            dim,
            dim // 2 if bidirectional else dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = Dropout(dropout)

    def _gru_packed_applies(self, x: Tensor) -> bool:
        """Whether this forward pass runs :func:`~mmfuse.layers._gru.gru_packed` instead of the ``nn.GRU`` module."""
        return (
            isinstance(self.rnn, nn.GRU)
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        )

    def forward(self, x: Tensor, padding_mask: Tensor, present: Tensor | None = None) -> Tensor:
        """Encode ``x`` ``[B, T, H]``; ``padding_mask`` ``[B, T]`` must mark a prefix of each row.

        Returns:
            ``[B, T, H]``, zero at padded steps.
        """
        t = x.shape[1]
        lengths = padding_mask.sum(dim=1).clamp_min(1)  # [B]; an empty row runs one (zero) step
        if self._gru_packed_applies(x):
            context = gru_packed(self.rnn, x, lengths)  # [B, T, H]: the same maths, far fewer CPU operators
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            context, _ = pad_packed_sequence(out, batch_first=True, total_length=t)  # [B, T, H]
        context = self.dropout(context)
        return zero_missing(self.norm(x + context if self.residual else context), padding_mask)


def _sinusoidal_positions(t: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    position = torch.arange(t, device=device, dtype=dtype).unsqueeze(1)  # [T, 1]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype) * (-math.log(10000.0) / dim))  # [ceil(H/2)]
    angles = position * freq  # [T, ceil(H/2)]
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # [T, 2*ceil(H/2)]
    return pe[:, :dim]  # [T, H]


_LEGACY_LAYER_NAMES = {"norm1": "norm_q", "norm2": "norm_ff"}
"""Submodule names of the transformer layers before they were :class:`AttentionBlock` -> their names now."""


def _rename_legacy_layer_keys(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
    """Rename, in place, the keys of a :class:`TransformerEncoder` saved before its layers were AttentionBlocks.

    A load-state-dict pre-hook: ``layers.N.norm1.*`` -> ``layers.N.norm_q.*`` and ``norm2`` -> ``norm_ff``, so old
    model directories and training checkpoints load unchanged.
    """
    head = f"{prefix}layers."
    for key in [k for k in state_dict if k.startswith(head)]:
        index, _, rest = key[len(head) :].partition(".")  # "N", "norm1.weight"
        name, _, leaf = rest.partition(".")
        if index.isdigit() and name in _LEGACY_LAYER_NAMES:
            state_dict[f"{head}{index}.{_LEGACY_LAYER_NAMES[name]}.{leaf}"] = state_dict.pop(key)


def rename_legacy_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return a copy of ``state_dict`` (of ``model``) with the keys older mmfuse versions wrote renamed.

    ``model.load_state_dict`` renames them itself (a pre-hook); this is for code that checks the keys of a saved
    state dict against a model before loading it (:func:`mmfuse.models.load_model`).

    Example:
        >>> enc = TransformerEncoder(4, num_heads=1)
        >>> old = {k.replace("norm_q", "norm1"): v for k, v in enc.state_dict().items()}
        >>> sorted(rename_legacy_keys(enc, old)) == sorted(enc.state_dict())
        True
    """
    renamed = dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, TransformerEncoder):
            _rename_legacy_layer_keys(module, renamed, f"{name}." if name else "")
    return renamed


class TransformerEncoder(_StackedEncoder):
    """Pre-norm transformer layers with sinusoidal positions; attends only to present, unpadded steps.

    Each layer is a self-attention :class:`~mmfuse.layers.attention.AttentionBlock`. Weights saved before the
    layers were AttentionBlocks (``layers.N.norm1`` / ``norm2``) load as they are: a load-state-dict pre-hook
    renames them (``norm_q`` / ``norm_ff``).

    Args:
        dim: Feature size ``H``.
        num_layers: Number of layers.
        num_heads: Attention heads (must divide ``dim``).
        causal: Each step attends only to itself and earlier steps.
        dropout: Dropout on attention weights and residual branches.

    Example:
        >>> enc = TransformerEncoder(8, num_heads=2, causal=True)
        >>> enc(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(
        self, dim: int, *, num_layers: int = 1, num_heads: int = 4, causal: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__(dim, num_layers, causal)
        num_heads = resolve_num_heads("TransformerEncoder", num_heads, dim, dim_name="dim")
        self.layers = nn.ModuleList(
            AttentionBlock(dim, num_heads, dropout=dropout, attn_dropout=dropout) for _ in range(num_layers)
        )
        self.register_load_state_dict_pre_hook(_rename_legacy_layer_keys)

    def forward(self, x: Tensor, padding_mask: Tensor, present: Tensor | None = None) -> Tensor:
        """Encode ``x`` ``[B, T, H]``.

        Args:
            x: Features ``[B, T, H]``.
            padding_mask: Bool ``[B, T]``, True at real steps.
            present: Optional bool ``[B, T]``: keys to attend to (default ``padding_mask``); a query with no
                such key gets a zero attention update (only its residual path and the feed-forward).

        Returns:
            ``[B, T, H]``, zero at padded steps.
        """
        b, t, h = x.shape
        keys = padding_mask if present is None else present & padding_mask  # [B, T]
        allowed = keys.unsqueeze(1).expand(b, t, t)  # [B, Tq, Tk]
        if self.is_causal:
            steps = torch.arange(t, device=x.device)
            allowed = allowed & (steps.unsqueeze(0) <= steps.unsqueeze(1)).unsqueeze(0)  # [B, Tq, Tk]
        x = x + _sinusoidal_positions(t, h, x.device, x.dtype).unsqueeze(0)  # [B, T, H]
        for layer in self.layers:
            x, _ = layer(x, allowed)  # [B, T, H]
        return zero_missing(self.norm(x), padding_mask)


class ConvEncoder(_StackedEncoder):
    """Residual 1-D convolutions over time ("same" padding, or left padding when causal).

    Args:
        dim: Feature size ``H``.
        num_layers: Number of convolution layers.
        kernel_size: Odd kernel width in steps.
        causal: Pad on the left only, so step ``t`` sees steps ``t - kernel_size + 1 .. t``.
        dropout: Dropout after each activation.

    Example:
        >>> ConvEncoder(8)(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(
        self, dim: int, *, num_layers: int = 1, kernel_size: int = 3, causal: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__(dim, num_layers, causal)
        _check_positive("ConvEncoder", "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"The 'kernel_size' parameter of ConvEncoder must be odd. Got {kernel_size} instead.")
        self.pad = (kernel_size - 1, 0) if causal else ((kernel_size - 1) // 2, (kernel_size - 1) // 2)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel_size) for _ in range(num_layers))
        self.act = nn.GELU()
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor, present: Tensor | None = None) -> Tensor:
        """Encode ``x`` ``[B, T, H]`` -> ``[B, T, H]`` (zero at padded steps)."""
        x = zero_missing(x, padding_mask)
        for conv in self.convs:
            h = nn.functional.pad(x.transpose(1, 2), self.pad)  # [B, H, T + k - 1]
            h = self.dropout(self.act(conv(h))).transpose(1, 2)  # [B, T, H]
            x = zero_missing(x + h, padding_mask)
        return zero_missing(self.norm(x), padding_mask)


def make_encoder(
    kind: str,
    dim: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = True,
    causal: bool = False,
    dropout: float = 0.0,
    num_heads: int = 4,
    kernel_size: int = 3,
    residual: bool = True,
) -> nn.Module:
    """Build the temporal encoder called ``kind`` (one of :data:`ENCODERS`).

    ``bidirectional`` and ``residual`` apply to "gru"/"lstm" only; ``bidirectional`` must be False when ``causal``
    is True.

    Example:
        >>> type(make_encoder("lstm", 8, bidirectional=False)).__name__
        'RNNEncoder'
    """
    if kind in ("gru", "lstm"):
        if causal and bidirectional:
            raise ValueError("A causal recurrent encoder cannot be bidirectional; pass bidirectional=False.")
        return RNNEncoder(
            dim, cell=kind, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, residual=residual
        )
    if kind == "transformer":
        return TransformerEncoder(dim, num_layers=num_layers, num_heads=num_heads, causal=causal, dropout=dropout)
    if kind == "conv":
        return ConvEncoder(dim, num_layers=num_layers, kernel_size=kernel_size, causal=causal, dropout=dropout)
    if kind == "none":
        return IdentityEncoder()
    raise ValueError(f"Unknown encoder {kind!r}. Valid names: {', '.join(ENCODERS)}.")
