"""A small multi-layer perceptron and the activation lookup shared by models."""

from __future__ import annotations

from torch import Tensor, nn

from mmfuse.layers.dropout import Dropout

__all__ = ["ACTIVATIONS", "MLP", "make_activation"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}
"""Activation name -> module class, the names configs may use."""


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module called ``name`` (one of :data:`ACTIVATIONS`).

    Raises:
        ValueError: naming the unknown activation and the valid ones.

    Example:
        >>> make_activation("relu")
        ReLU()
    """
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}. Valid names: {', '.join(sorted(ACTIVATIONS))}.") from None


class MLP(nn.Module):
    """Linear layers with an activation and dropout between them (none after the last).

    Args:
        in_dim: Input feature size.
        hidden_dims: Sizes of the hidden layers (empty: a single linear layer).
        out_dim: Output feature size.
        activation: Name of the activation between layers.
        dropout: Dropout probability after each hidden activation.

    Shapes:
        ``[..., in_dim] -> [..., out_dim]``.

    Example:
        >>> import torch
        >>> mlp = MLP(4, [8], 2)
        >>> mlp(torch.zeros(3, 5, 4)).shape
        torch.Size([3, 5, 2])
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: list[int] | tuple[int, ...],
        out_dim: int,
        *,
        activation: str = "gelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            *((f"hidden_dims[{i}]", h) for i, h in enumerate(hidden_dims)),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The {name!r} parameter of MLP must be a positive integer. Got {value!r} instead.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"The 'dropout' parameter of MLP must be in [0, 1). Got {dropout!r} instead.")
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(prev, h), make_activation(activation), Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to the last dimension: ``[..., in_dim] -> [..., out_dim]``."""
        return self.net(x)
