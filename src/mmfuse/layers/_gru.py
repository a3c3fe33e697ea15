"""A GRU over padded sequences for the CPU: the maths of :class:`torch.nn.GRU` on packed sequences, fewer operators.

On the CPU, ``nn.GRU`` over a packed sequence runs a dozen small operators per time step and direction, records
each for autograd, and computes the recurrent weight gradient with small matrix products step by step.
:func:`gru_packed` does the same arithmetic on the same real steps with:

* the input projections of every real step and both directions in one matrix product;
* one recurrence for both directions (batched products over ``[D, b_t, h]``, ``b_t`` the sequences still running
  at step ``t``, longest first as in a packed sequence), whose backward pass is written out (back-propagation
  through time in :class:`_GRURecurrence`): per step one batched product and a few element-wise operators, and the
  weight and bias gradients of all steps in one product after the loop;
* the reverse direction run on each sequence reversed within its own length, so that in both directions the
  running sequences are a prefix of the batch and padding is never read.

Real steps equal ``nn.GRU`` on the packed sequence up to float rounding (tested: outputs and gradients); padded
steps are zero, as ``pad_packed_sequence`` gives.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.layers.dropout import dropout

__all__ = ["gru_packed"]


class _GRURecurrence(torch.autograd.Function):
    """``D`` GRU recurrences over packed steps, given their input projections.

    Shapes: ``gi`` ``[D, N, 3h]`` (``x W_ih^T + b_ih`` of the ``N`` real steps in packed order: step 0 of every
    sequence, then step 1 of those longer than 1, ...; gates r, z, n), ``w_hh`` ``[D, 3h, h]``, ``b_hh``
    ``[D, 3h]``, ``sizes`` the running sequences per step (non-increasing, a Python list); the output is the hidden
    state of every packed step ``[D, N, h]`` from a zero initial state.
    """

    @staticmethod
    def forward(gi: Tensor, w_hh: Tensor, b_hh: Tensor, sizes: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        d, n_steps, three_h = gi.shape
        h = three_h // 3
        out = gi.new_empty(d, n_steps, h)  # [D, N, h]
        gh = gi.new_empty(d, n_steps, three_h)  # [D, N, 3h] recurrent projections h_{t-1} W_hh^T + b_hh
        rz = gi.new_empty(d, n_steps, 2 * h)  # [D, N, 2h] reset and update gates
        cand = gi.new_empty(d, n_steps, h)  # [D, N, h] candidate state
        w_t = w_hh.transpose(1, 2)  # [D, h, 3h]
        bias = b_hh.unsqueeze(1)  # [D, 1, 3h]
        state = gi.new_zeros(d, sizes[0], h)  # [D, b_0, h]
        # per-step views, cut once: [D, b_t, *] each
        steps = zip(
            sizes,
            gi[..., : 2 * h].split(sizes, dim=1),
            gi[..., 2 * h :].split(sizes, dim=1),
            gh.split(sizes, dim=1),
            rz.split(sizes, dim=1),
            cand.split(sizes, dim=1),
            out.split(sizes, dim=1),
            strict=True,
        )
        for size, gi_rz, gi_n, gh_t, rz_t, cand_t, out_t in steps:
            state = state[:, :size]  # [D, b_t, h] the sequences still running
            torch.baddbmm(bias, state, w_t, out=gh_t)
            torch.add(gi_rz, gh_t[..., : 2 * h], out=rz_t).sigmoid_()
            torch.tanh(torch.addcmul(gi_n, rz_t[..., :h], gh_t[..., 2 * h :]), out=cand_t)
            state = torch.addcmul(cand_t, rz_t[..., h:], state - cand_t, out=out_t)  # n + z (h - n)
        return out, gh, rz, cand

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        _, w_hh, _, sizes = inputs
        out, gh, rz, cand = output
        ctx.mark_non_differentiable(gh, rz, cand)
        ctx.sizes = sizes
        ctx.save_for_backward(w_hh, out, gh, rz, cand)

    @staticmethod
    def backward(ctx: Any, d_out: Tensor, *_: Any) -> tuple[Tensor, Tensor, Tensor, None]:
        w_hh, out, gh, rz, cand = ctx.saved_tensors
        sizes: list[int] = ctx.sizes
        d, _, h = out.shape
        h_prev = _previous_states(out, sizes)  # [D, N, h]
        r, z = rz[..., :h], rz[..., h:]
        # Every gate's pre-activation gradient is the step's state gradient times a factor known before the loop.
        a_n = (1 - z) * (1 - cand * cand)  # d n_pre / d h_t
        a_z = (h_prev - cand) * z * (1 - z)  # d z_pre / d h_t
        a_r = a_n * gh[..., 2 * h :] * r * (1 - r)  # d r_pre / d h_t
        factor = torch.cat([a_r, a_z, a_n * r], dim=-1)  # [D, N, 3h]: d gh / d h_t per gate
        d_gh = torch.empty_like(factor)  # [D, N, 3h]
        d_state = torch.empty_like(out)  # [D, N, h] total gradient reaching each state
        carry = out.new_zeros(d, sizes[0], h)  # gradient reaching h_t from step t + 1 (zero past a sequence's end)
        steps = zip(
            sizes,
            d_out.split(sizes, dim=1),
            factor.split(sizes, dim=1),
            d_gh.split(sizes, dim=1),
            d_state.split(sizes, dim=1),
            z.split(sizes, dim=1),
            strict=True,
        )
        for size, d_out_t, factor_t, d_gh_t, d_state_t, z_t in reversed(list(steps)):
            grad = torch.add(d_out_t, carry[:, :size], out=d_state_t)  # [D, b_t, h]
            torch.mul(factor_t.view(d, size, 3, h), grad.unsqueeze(2), out=d_gh_t.view(d, size, 3, h))
            carry[:, :size] = torch.baddbmm(grad * z_t, d_gh_t, w_hh)  # [D, b_t, h]
        d_gi = torch.cat([d_gh[..., : 2 * h], d_state * a_n], dim=-1)  # [D, N, 3h]
        d_w = torch.bmm(d_gh.transpose(1, 2), h_prev)  # [D, 3h, h]
        return d_gi, d_w, d_gh.sum(dim=1), None


def _previous_states(out: Tensor, sizes: list[int]) -> Tensor:
    """The state each packed step started from ``[D, N, h]`` (zero at step 0), from the states ``out``."""
    d, _, h = out.shape
    parts = [out.new_zeros(d, sizes[0], h)]
    start = 0
    for size, nxt in itertools.pairwise(sizes):
        parts.append(out[:, start : start + nxt])
        start += size
    return torch.cat(parts, dim=1)


def gru_packed(rnn: nn.GRU, x: Tensor, lengths: Tensor) -> Tensor:
    """Run ``rnn`` (batch-first, with biases, any layers, one or two directions) over padded ``x`` ``[B, T, D_in]``.

    Args:
        rnn: The ``nn.GRU`` whose parameters are used (its forward is not called).
        x: Input ``[B, T, D_in]``; sequence ``b`` holds real steps ``0 .. lengths[b] - 1``.
        lengths: Real steps per sequence ``[B]``, each at least 1.

    Returns:
        ``[B, T, D * h]`` (directions concatenated as ``nn.GRU`` does), zero at padded steps.

    Raises:
        ValueError: ``rnn`` is not batch-first or has no biases.
    """
    if not (rnn.batch_first and rnn.bias):
        raise ValueError(
            f"gru_packed needs a batch-first nn.GRU with biases. Got batch_first={rnn.batch_first}, bias={rnn.bias}."
        )
    b, t_len = x.shape[:2]
    sorted_len, order = torch.sort(lengths, descending=True)  # [B] longest first, as pack_padded_sequence sorts
    steps = torch.arange(t_len, device=x.device)
    running = steps.unsqueeze(1) < sorted_len.unsqueeze(0)  # [T, B] (time-major, sorted): real steps
    sizes = [int(s) for s in running.sum(dim=1).tolist() if s > 0]
    source = (order.unsqueeze(0) * t_len + steps.unsqueeze(1))[running]  # [N] row of x as [B*T, D_in] per packed step
    n = source.shape[0]
    packed = torch.arange(n, device=x.device)  # [N]
    directions = 2 if rnn.bidirectional else 1
    read, write = packed, packed  # rows of the projections each direction reads; of the states each output takes
    if directions == 2:
        position = running.flatten().cumsum(0).view(t_len, b) - 1  # [T, B] packed position of (t, sorted row)
        rev_time = (sorted_len.unsqueeze(0) - 1 - steps.unsqueeze(1)).clamp_min(0)  # [T, B] the mirrored step
        reverse = position.gather(0, rev_time)[running]  # [N] packed position of the mirrored step (an involution)
        read = torch.cat([packed * 2, reverse * 2 + 1])  # [2N] in [N*2] (step, direction) rows
        write = torch.stack([packed, n + reverse], dim=1).flatten()  # [2N] in [2*N] (direction, step) rows
    layer_in = x.reshape(b * t_len, -1).index_select(0, source)  # [N, D_in] packed real steps
    for layer in range(rnn.num_layers):
        suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:directions]
        w_ih = torch.cat([getattr(rnn, f"weight_ih{s}") for s in suffixes])  # [D*3h, D_in]
        b_ih = torch.cat([getattr(rnn, f"bias_ih{s}") for s in suffixes])  # [D*3h]
        gi = nn.functional.linear(layer_in, w_ih, b_ih)  # [N, D*3h]
        gi = gi.view(n * directions, -1).index_select(0, read).view(directions, n, -1)  # [D, N, 3h], reverse mirrored
        w_hh = torch.stack([getattr(rnn, f"weight_hh{s}") for s in suffixes])  # [D, 3h, h]
        b_hh = torch.stack([getattr(rnn, f"bias_hh{s}") for s in suffixes])  # [D, 3h]
        states = _GRURecurrence.apply(gi, w_hh, b_hh, sizes)[0]  # [D, N, h]
        layer_in = states.reshape(directions * n, -1).index_select(0, write).view(n, -1)  # [N, D*h] in time order
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            layer_in = dropout(layer_in, rnn.dropout, rnn.training)
    out = layer_in.new_zeros(b * t_len, layer_in.shape[-1]).index_copy(0, source, layer_in)  # [B*T, D*h]
    return out.view(b, t_len, -1)  # [B, T, D*h]
