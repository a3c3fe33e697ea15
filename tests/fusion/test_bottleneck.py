from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mmfuse.evaluate.analysis.uncertainty import enable_mc_dropout
from mmfuse.fusion import BottleneckFusion, create_fusion, fusion_kwargs
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}


def _only_audio_late(t: int = 8) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Audio everywhere, text in the first half only, video nowhere; returns the audio-only steps too."""
    gen = torch.Generator().manual_seed(3)
    x = {k: torch.randn(2, t, d, generator=gen) for k, d in DIMS.items()}
    text = torch.zeros(2, t, dtype=torch.bool)
    text[:, : t // 2] = True
    m = {"audio": torch.ones(2, t, dtype=torch.bool), "text": text, "video": torch.zeros(2, t, dtype=torch.bool)}
    return x, m, ~text


def _change_text(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**x, "text": x["text"] * -3.0 + 1.0}


def test_tokens_are_the_only_cross_modal_path() -> None:
    """At audio-only steps, text can reach the output only through the fusion tokens."""
    x, m, audio_only = _only_audio_late()
    torch.manual_seed(0)
    f = BottleneckFusion(DIMS, 8, layers=2).eval()
    with torch.no_grad():
        ref, changed = f(x, m), f(_change_text(x), m)
    # With the exchange on, text changes the audio-only steps (so the test below can fail) ...
    assert not torch.allclose(changed[audio_only], ref[audio_only], atol=1e-4)
    # ... and the text steps themselves, of course.
    assert not torch.allclose(changed[~audio_only], ref[~audio_only], atol=1e-4)

    # Disable the token update: every layer reads the learned initial tokens. Now audio-only steps are blind to
    # text, while text steps still see it (it is their own input).
    f.merge_tokens = lambda updated, has_any, previous: previous  # type: ignore[method-assign]
    with torch.no_grad():
        ref, changed = f(x, m), f(_change_text(x), m)
    torch.testing.assert_close(changed[audio_only], ref[audio_only], rtol=0, atol=0)
    assert not torch.allclose(changed[~audio_only], ref[~audio_only], atol=1e-4)


def test_one_layer_is_late_fusion() -> None:
    """With layers=1 the tokens are read before any modality wrote to them: no exchange before the output mean."""
    x, m, audio_only = _only_audio_late()
    f = BottleneckFusion(DIMS, 8, layers=1).eval()
    with torch.no_grad():
        torch.testing.assert_close(f(_change_text(x), m)[audio_only], f(x, m)[audio_only], rtol=0, atol=0)


def test_merge_tokens_averages_present_modalities_only() -> None:
    f = BottleneckFusion(DIMS, 8, num_tokens=2, bottleneck_dim=4)
    updated = torch.stack([torch.full((2, 4), float(v)) for v in (1.0, 5.0, 9.0)]).unsqueeze(0).repeat(2, 1, 1, 1)
    previous = torch.full((2, 2, 4), -7.0)
    has_any = torch.tensor([[True, False, True], [False, False, False]])
    merged = f.merge_tokens(updated, has_any, previous)
    torch.testing.assert_close(merged[0], torch.full((2, 4), 5.0))  # mean of 1 and 9; 5 is absent
    torch.testing.assert_close(merged[1], previous[1])  # no modality anywhere: tokens kept


def test_weights_are_what_the_tokens_read() -> None:
    f = BottleneckFusion(DIMS, 8).eval()
    x, m = make_fusion_inputs(DIMS, 3, 9, seed=1)
    with torch.no_grad():
        out, w = f.forward_with_weights(x, m)
    assert out.shape == (3, 9, 8)
    assert w is not None and w.shape == (3, 9, 3)
    present = torch.stack([m[k] for k in sorted(DIMS)], dim=-1)
    assert torch.all(w[~present] == 0)
    assert torch.all(w[present] > 0)
    per_modality = w.sum(dim=1)  # [B, M]: the rest of the tokens' attention goes to the tokens themselves
    assert torch.all(per_modality < 1) and torch.all(per_modality > 0)


def test_not_causal_uses_the_future() -> None:
    f = BottleneckFusion(DIMS, 8).eval()
    assert f.is_causal is False
    x, m = make_fusion_inputs(DIMS, 2, 6, p_missing=0.0)
    x2 = {k: v.clone() for k, v in x.items()}
    x2["audio"][:, -1] += 5.0
    with torch.no_grad():
        assert not torch.allclose(f(x, m)[:, 0], f(x2, m)[:, 0])


def test_dropout_path_is_finite_and_varies() -> None:
    f = BottleneckFusion(DIMS, 8, dropout=0.5).train()
    x, m = make_fusion_inputs(DIMS, 2, 6)
    a, b = f(x, m), f(x, m)
    assert bool(a.isfinite().all()) and not torch.allclose(a, b)


def test_mc_dropout_samples_the_attention_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """enable_mc_dropout switches on the dropout modules of an evaluating model; the attention dropout follows them."""
    seen: list[float] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(float(kwargs.get("dropout_p", 0.0)))  # type: ignore[arg-type]
        return sdpa(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    f = BottleneckFusion(DIMS, 8, dropout=0.5).eval()
    x, m = make_fusion_inputs(DIMS, 2, 6)
    f(x, m)
    assert seen and set(seen) == {0.0}  # evaluation: no attention dropout
    seen.clear()
    with enable_mc_dropout(f):
        f(x, m)
    assert seen and set(seen) == {0.5}
    seen.clear()
    f.train()(x, m)
    assert seen and set(seen) == {0.5}


def _flops(name: str, steps: int, batch: int = 2, hidden: int = 64) -> int:
    dims = {"a": hidden, "b": hidden, "c": hidden}
    f = create_fusion(name, dims, hidden).to("meta").eval()  # meta tensors: shapes only, instant
    x = {k: torch.empty(batch, steps, hidden, device="meta") for k in dims}
    m = {k: torch.ones(batch, steps, dtype=torch.bool, device="meta") for k in dims}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        f(x, m)
    return int(counter.get_total_flops())


def test_flops_grow_slower_in_t_than_pairwise_cross_attention() -> None:
    """Matmul FLOPs are exact quadratics in T; check their T² terms against the formulas, and the ratios."""
    steps = (50, 100, 150, 800)
    bott = [_flops("bottleneck", t) for t in steps]
    cross = [_flops("cross_attention", t) for t in steps]

    def t2_coefficient(f: list[int]) -> float:  # second difference at step 50
        return (f[2] - 2 * f[1] + f[0]) / (2 * 50**2)

    b, m, h, h_b, layers = 2, 3, 64, 32, 2
    # Pairwise: each modality's T queries against the other modalities' M*T keys, QK and AV.
    assert t2_coefficient(cross) == 4 * b * m * m * h
    # Bottleneck: each modality's own T(+K) steps, per layer, at width H_b; cross-modal cost is linear in T.
    assert t2_coefficient(bott) == 4 * b * m * layers * h_b
    assert bott[-1] / bott[0] < 0.75 * (cross[-1] / cross[0])  # grows slower from T=50 to T=800
    ratios = [bb / cc for bb, cc in zip(bott, cross, strict=True)]
    assert all(r2 < r1 for r1, r2 in itertools.pairwise(ratios))  # and the gap widens with T
    assert ratios[-1] < 0.45


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bottleneck_dim": 0}, "'bottleneck_dim' parameter of BottleneckFusion must be a positive integer"),
        ({"num_tokens": 0}, "'num_tokens' parameter of BottleneckFusion must be a positive integer"),
        ({"layers": 1.5}, "'layers' parameter of BottleneckFusion must be a positive integer. Got 1.5"),
        (
            {"num_heads": 3},
            r"^The 'num_heads' parameter of BottleneckFusion must be a positive divisor of bottleneck_dim \(32\)\. "
            r"Got 3 instead\.$",
        ),
        ({"num_heads": True}, r"positive divisor of bottleneck_dim \(32\)\. Got True instead"),
        ({"num_heads": 0, "bottleneck_dim": 16}, r"positive divisor of bottleneck_dim \(16\)\. Got 0 instead"),
        ({"dropout": 1.0}, r"'dropout' parameter of BottleneckFusion must be a number in \[0, 1\)"),
        ({"causal": True}, r"Unknown keyword argument\(s\) \['causal'\] for fusion 'bottleneck'"),
    ],
)
def test_bad_kwargs_are_clear(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_fusion("bottleneck", DIMS, 8, **kwargs)


def test_defaults_and_heads() -> None:
    assert fusion_kwargs("bottleneck") == {
        "bottleneck_dim": 32,
        "num_tokens": 4,
        "layers": 2,
        "num_heads": None,
        "dropout": 0.0,
    }
    assert BottleneckFusion(DIMS, 8).num_heads == 2
    assert BottleneckFusion(DIMS, 8, bottleneck_dim=24).num_heads == 1
    assert "num_tokens=4" in repr(BottleneckFusion(DIMS, 8))
