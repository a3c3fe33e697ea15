from __future__ import annotations

import pytest
import torch

from mmfuse.fusion import ATCMFusion, create_fusion, fusion_kwargs, list_fusions
from mmfuse.testing import make_fusion_inputs

DIMS = {"text": 5, "audio": 3, "video": 4}


def _inputs(b: int = 2, t: int = 10, seed: int = 0):
    return make_fusion_inputs(DIMS, b, t, seed=seed)


def _all_present(x):
    return {k: torch.ones(v.shape[:2], dtype=torch.bool) for k, v in x.items()}


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _bump(x, step: int, names=None):
    out = {k: v.clone() for k, v in x.items()}
    for k in names or out:
        out[k][:, step] += 2.0
    return out


def test_registered_with_its_kwargs() -> None:
    assert "atcm" in list_fusions()
    assert isinstance(create_fusion("atcm", DIMS, 8), ATCMFusion)
    assert fusion_kwargs("atcm") == {
        "hidden": None,
        "num_heads": None,
        "window": 2,
        "global_layers": 1,
        "causal": False,
        "dropout": 0.0,
    }


@pytest.mark.parametrize("window", [0, 1, 2])
def test_local_stage_never_looks_outside_the_window(window: int) -> None:
    f = ATCMFusion(DIMS, 8, window=window).eval()
    x, _ = _inputs()
    m = _all_present(x)
    t0 = 5
    with torch.no_grad():
        ref, _ = f.local_stage(*f.prepare(x, m))
        for outside in (t0 - window - 1, t0 + window + 1):
            local, _ = f.local_stage(*f.prepare(_bump(x, outside), m))
            torch.testing.assert_close(local[:, t0], ref[:, t0])
        for inside in (t0 - window, t0 + window):
            local, _ = f.local_stage(*f.prepare(_bump(x, inside), m))
            assert not torch.allclose(local[:, t0], ref[:, t0])
        # The global stage carries the step outside the window to t0.
        far = _bump(x, t0 + window + 1)
        assert not torch.allclose(f(far, m)[:, t0], f(x, m)[:, t0])


def test_causal_local_window_is_the_past_w_steps() -> None:
    w = 2
    f = ATCMFusion(DIMS, 8, window=w, causal=True).eval()
    assert f.is_causal and f.num_offsets == w + 1
    x, _ = _inputs()
    m = _all_present(x)
    t0 = 5
    with torch.no_grad():
        ref, _ = f.local_stage(*f.prepare(x, m))
        for step, seen in ((t0 + 1, False), (t0 - w - 1, False), (t0, True), (t0 - w, True)):
            local, _ = f.local_stage(*f.prepare(_bump(x, step), m))
            assert torch.allclose(local[:, t0], ref[:, t0]) is not seen, step
        out = f(x, m)
        later = f(_bump(x, t0 + 1), m)
        torch.testing.assert_close(later[:, : t0 + 1], out[:, : t0 + 1])


def test_every_modality_influences_the_output_through_both_stages() -> None:
    """Each modality reaches step t0 both inside the window and, via the global stage, from far away."""
    f = ATCMFusion(DIMS, 8, window=1).eval()
    x, _ = _inputs()
    m = _all_present(x)
    t0 = 1
    with torch.no_grad():
        ref = f(x, m)
        ref_local, _ = f.local_stage(*f.prepare(x, m))
        for name in DIMS:
            near = _bump(x, t0, [name])
            assert not torch.allclose(f.local_stage(*f.prepare(near, m))[0][:, t0], ref_local[:, t0]), name
            far = _bump(x, 8, [name])  # distance 7 > window: only the global stage can carry it
            torch.testing.assert_close(f.local_stage(*f.prepare(far, m))[0][:, t0], ref_local[:, t0])
            assert not torch.allclose(f(far, m)[:, t0], ref[:, t0]), name


@pytest.mark.parametrize("causal", [False, True])
def test_appended_padding_changes_nothing(causal: bool) -> None:
    """Neither stage looks at padding: appending all-missing steps leaves the real steps unchanged."""
    f = ATCMFusion(DIMS, 8, causal=causal).eval()
    x, m = _inputs(t=6)
    padded_x = {k: torch.cat([v, torch.randn(2, 4, v.shape[-1])], dim=1) for k, v in x.items()}
    padded_m = {k: torch.cat([v, torch.zeros(2, 4, dtype=torch.bool)], dim=1) for k, v in m.items()}
    with torch.no_grad():
        ref, ref_w = f.forward_with_weights(x, m)
        out, w = f.forward_with_weights(padded_x, padded_m)
    torch.testing.assert_close(out[:, :6], ref)
    assert w is not None and ref_w is not None
    torch.testing.assert_close(w[:, :6], ref_w)


def test_query_is_learned_vector_plus_mean_of_present_tokens() -> None:
    """With the local attention output silenced, ``local`` is exactly the fused query."""
    f = ATCMFusion(DIMS, 8).eval()
    with torch.no_grad():
        f.local_attn.out_proj.weight.zero_()
        f.local_attn.out_proj.bias.zero_()
    x, m = _inputs(t=7)
    names = sorted(DIMS)
    with torch.no_grad():
        local, _ = f.local_stage(*f.prepare(x, m))
        tokens = torch.stack([f.in_proj[i](x[k]) + f.modality_embedding[i] for i, k in enumerate(names)], dim=2)
        present = torch.stack([m[k] for k in names], dim=2).unsqueeze(-1)  # [B, T, M, 1]
        mean = (tokens * present).sum(2) / present.sum(2).clamp_min(1)
    torch.testing.assert_close(local, f.query + mean)


def test_a_missing_modality_has_no_influence() -> None:
    f = ATCMFusion(DIMS, 8).eval()
    x, m = _inputs()
    m = {**m, "video": torch.zeros_like(m["video"])}
    with torch.no_grad():
        ref, ref_w = f.forward_with_weights(x, m)
        out, w = f.forward_with_weights({**x, "video": torch.randn_like(x["video"]) * 100}, m)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w, ref_w)
    assert w is not None and torch.all(w[:, :, 2] == 0)  # canonical order: audio, text, video


def test_global_stage_changes_the_output_and_can_be_disabled() -> None:
    x, m = _inputs()
    with_global = ATCMFusion(DIMS, 8).eval()
    local_only = ATCMFusion(DIMS, 8, global_layers=0).eval()
    assert local_only.global_encoder is None
    with torch.no_grad():
        local, _ = local_only.local_stage(*local_only.prepare(x, m))
        expected = local_only.out_proj(local_only.out_norm(local))
        torch.testing.assert_close(local_only(x, m), expected)
        local, _ = with_global.local_stage(*with_global.prepare(x, m))
        assert not torch.allclose(with_global(x, m), with_global.out_proj(with_global.out_norm(local)))


@pytest.mark.parametrize("causal", [False, True])
def test_weights_sum_to_one_over_present_keys(causal: bool) -> None:
    w = 2
    f = ATCMFusion(DIMS, 8, window=w, causal=causal).eval()
    x, m = _inputs(t=9)
    _, weights = f.forward_with_weights(x, m)
    assert weights is not None and weights.shape == (2, 9, 3, 2 * w + 1)
    present = torch.stack([m[k] for k in sorted(DIMS)], dim=-1)  # [B, T, M]
    padded = torch.cat([torch.zeros(2, w, 3, dtype=torch.bool), present, torch.zeros(2, w, 3, dtype=torch.bool)], 1)
    key_present = torch.stack([padded[:, j : j + 9] for j in range(2 * w + 1)], dim=-1)  # [B, T, M, 2w + 1]
    if causal:
        key_present[..., w + 1 :] = False
    assert torch.all(weights[~key_present] == 0)
    has_key = key_present.flatten(2).any(-1)
    sums = weights.flatten(2).sum(-1)
    torch.testing.assert_close(sums[has_key], torch.ones(int(has_key.sum())))
    assert torch.all(sums[~has_key] == 0)
    # Edges: step 0 has no keys at negative offsets.
    assert torch.all(weights[:, 0, :, :w] == 0)


def test_identical_keys_get_uniform_weights() -> None:
    """With zero inputs and zero embeddings every key is the same, so the weights are 1 / (present keys)."""
    f = ATCMFusion(DIMS, 8, window=1).eval()
    with torch.no_grad():
        f.modality_embedding.zero_()
        f.offset_embedding.zero_()
        for p in f.in_proj:
            p.bias.zero_()
    x = {k: torch.zeros(1, 4, d) for k, d in DIMS.items()}
    m = {"audio": torch.tensor([[True, True, False, True]]), "text": torch.ones(1, 4, dtype=torch.bool)}
    m["video"] = torch.tensor([[False, False, False, True]])
    _, w = f.forward_with_weights(x, m)
    assert w is not None
    # Step 1 sees steps 0..2: audio at 0, 1; text at 0, 1, 2; video nowhere -> 5 keys.
    expected = torch.tensor([[0.2, 0.2, 0.0], [0.2, 0.2, 0.2], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(w[0, 1], expected)


def test_window_zero_sees_only_the_current_step() -> None:
    f = ATCMFusion(DIMS, 8, window=0).eval()
    x, m = _inputs(t=5)
    _, w = f.forward_with_weights(x, m)
    assert w is not None and w.shape == (2, 5, 3, 1)
    present = torch.stack([m[k] for k in sorted(DIMS)], dim=-1)
    assert torch.all(w[..., 0][~present] == 0)


def test_parameter_counts_scale_as_expected() -> None:
    h = 8
    base = _n_params(ATCMFusion(DIMS, 8, hidden=h, window=2))
    assert _n_params(ATCMFusion(DIMS, 8, hidden=h, window=5)) - base == 2 * 3 * h  # 2 offsets per window step
    assert _n_params(ATCMFusion(DIMS, 8, hidden=h, window=2, causal=True)) == base - 2 * h  # no future offsets
    layer = 8 * h * h + 11 * h  # 2 LayerNorms, attention 4 (H^2 + H), FFN H -> 2H -> H
    assert _n_params(ATCMFusion(DIMS, 8, hidden=h, global_layers=3)) - base == 2 * layer
    assert base - _n_params(ATCMFusion(DIMS, 8, hidden=h, global_layers=0)) == layer + 2 * h  # + final LayerNorm
    # The local stage does not grow with the number of modalities beyond a projection and an embedding row.
    more = _n_params(ATCMFusion({**DIMS, "depth": 6}, 8, hidden=h))
    assert more - base == 6 * h + h + h


def test_dropout_is_active_in_training_only() -> None:
    f = ATCMFusion(DIMS, 8, dropout=0.5)
    x, m = _inputs()
    torch.manual_seed(0)
    assert not torch.allclose(f(x, m), f(x, m))
    f.eval()
    torch.testing.assert_close(f(x, m), f(x, m))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": -1}, "'window' parameter of ATCMFusion must be an integer >= 0. Got -1"),
        ({"window": 1.5}, "'window' parameter of ATCMFusion"),
        ({"num_heads": 3}, r"'num_heads' parameter of ATCMFusion must be a positive divisor of hidden \(8\)"),
        ({"hidden": 6, "num_heads": 4}, r"positive divisor of hidden \(6\). Got 4"),
        ({"global_layers": -2}, "'global_layers' parameter of ATCMFusion must be an integer >= 0"),
        ({"dropout": 1.5}, r"'dropout' parameter of ATCMFusion must be a number in \[0, 1\)"),
        ({"causal": 1}, "'causal' parameter of ATCMFusion must be a bool"),
    ],
)
def test_bad_kwargs_are_named(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ATCMFusion(DIMS, 8, **kwargs)
