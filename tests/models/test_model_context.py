"""Context conditioning, extra modalities, modality-dropout rate and gradient checkpointing of the model."""

from __future__ import annotations

import pytest
import torch

from mmfuse.models import ModelConfig, build_model, load_model, save_model
from mmfuse.types import Batch

DIMS = {"text": 6, "audio": 4}


def make_batch(b: int = 4, t: int = 5, seed: int = 0, context: dict | None = None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    padding = torch.ones(b, t, dtype=torch.bool)
    inputs = {m: torch.randn(b, t, d, generator=g) for m, d in DIMS.items()}
    masks = {m: torch.ones(b, t, dtype=torch.bool) for m in DIMS}
    return Batch(inputs=inputs, masks=masks, padding_mask=padding, context=context or {})


@pytest.mark.parametrize("mode", ["film", "add", "concat"])
def test_context_changes_the_output_and_is_optional(mode: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(DIMS, out_dim=2, hidden=8, context_sizes={"domain": 3}, context_mode=mode)
    model = build_model(cfg).eval()
    if mode == "film":  # starts as the identity; give it a non-trivial conditioning to test the path
        torch.nn.init.normal_(model.context.film.weight)
    ctx_a = {"domain": torch.tensor([0, 0, 0, 0])}
    ctx_b = {"domain": torch.tensor([2, 2, 2, 2])}
    out_a, out_b = model(make_batch(context=ctx_a)), model(make_batch(context=ctx_b))
    assert not torch.allclose(out_a, out_b)
    # no context at all: the model runs unchanged, using the "unknown" embedding (index 0 of the table)
    out_none = model(make_batch())
    assert out_none.shape == out_a.shape and bool(out_none.isfinite().all())
    assert not torch.allclose(out_none, out_a)
    # per-sample: each row depends only on its own context value
    mixed = model(make_batch(context={"domain": torch.tensor([0, 2, 0, 2])}))
    torch.testing.assert_close(mixed[0], out_a[0])
    torch.testing.assert_close(mixed[1], out_b[1])


def test_film_context_starts_as_identity() -> None:
    torch.manual_seed(0)
    plain = build_model(ModelConfig(DIMS, out_dim=2, hidden=8)).eval()
    torch.manual_seed(0)
    with_ctx = build_model(ModelConfig(DIMS, out_dim=2, hidden=8, context_sizes={"domain": 3})).eval()
    state = {k: v for k, v in with_ctx.state_dict().items() if not k.startswith("context.")}
    plain.load_state_dict(state)
    batch = make_batch(context={"domain": torch.tensor([1, 2, 0, 1])})
    torch.testing.assert_close(with_ctx(batch), plain(make_batch()))


def test_context_errors_name_the_problem() -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=8, context_sizes={"domain": 3})).eval()
    with pytest.raises(ValueError, match=r"context 'domain'.*outside \[0, 2\]"):
        model(make_batch(context={"domain": torch.tensor([0, 3, 0, 0])}))
    with pytest.raises(ValueError, match=r"context 'domain'.*shape \[4\]"):
        model(make_batch(context={"domain": torch.tensor([0, 1])}))
    with pytest.raises(ValueError, match="context_sizes"):
        ModelConfig(DIMS, out_dim=2, context_sizes={"domain": 0})
    with pytest.raises(ValueError, match="context_mode"):
        ModelConfig(DIMS, out_dim=2, context_sizes={"domain": 2}, context_mode="mul")


def test_context_model_saves_and_loads(tmp_path) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=8, context_sizes={"domain": 3, "speaker": 5})).eval()
    again = load_model(save_model(model, tmp_path))
    batch = make_batch(context={"domain": torch.tensor([0, 1, 2, 0]), "speaker": torch.tensor([4, 3, 2, 1])})
    torch.testing.assert_close(again(batch), model(batch))


def test_extra_modalities_in_the_batch_are_ignored() -> None:
    torch.manual_seed(0)
    text_only = build_model(ModelConfig({"text": 6}, out_dim=2, hidden=8)).eval()
    batch = make_batch()
    out = text_only(batch)
    changed = make_batch()
    changed.inputs["audio"] = changed.inputs["audio"] * 100 + 5
    torch.testing.assert_close(text_only(changed), out)
    with pytest.raises(ValueError, match=r"must include the modalities \['audio', 'text'\]; missing \['audio'\]"):
        build_model(ModelConfig(DIMS, out_dim=2, hidden=8))(
            Batch(
                inputs={"text": batch.inputs["text"]},
                masks={"text": batch.masks["text"]},
                padding_mask=batch.padding_mask,
            )
        )


def test_set_modality_dropout_controls_training_masks() -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=8, modality_dropout=0.5))
    assert model.modality_dropout_target == 0.5 and model.modality_dropout_rate == 0.5
    model.set_modality_dropout(0.0)
    model.train()
    masks = {m: torch.ones(64, 3, dtype=torch.bool) for m in DIMS}
    out = model._modality_dropout(masks, torch.ones(64, 3, dtype=torch.bool))
    assert all(bool(v.all()) for v in out.values())
    model.set_modality_dropout(0.9)
    out = model._modality_dropout(masks, torch.ones(64, 3, dtype=torch.bool))
    hidden = sum(int((~v[:, 0]).sum()) for v in out.values())
    assert hidden > 30  # most sequences lose one of their two modalities
    assert bool((out["text"][:, 0] | out["audio"][:, 0]).all())  # never both
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        model.set_modality_dropout(1.0)


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_gradient_checkpointing_gives_the_same_gradients(encoder: str) -> None:
    cfg = ModelConfig(DIMS, out_dim=2, hidden=8, encoder=encoder, num_heads=2, dropout=0.0)
    torch.manual_seed(0)
    plain = build_model(cfg).train()
    torch.manual_seed(0)
    ckpt = build_model(cfg.replace(gradient_checkpointing=True)).train()
    batch = make_batch()
    plain(batch).square().sum().backward()
    ckpt(batch).square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("level", ["sample", "step"])
@pytest.mark.parametrize("fusion", ["late", "uncertainty_late"])
def test_decision_level_fusions_are_the_prediction(level: str, fusion: str) -> None:
    cfg = ModelConfig(DIMS, out_dim=3, hidden=8, fusion=fusion, label_level=level, context_sizes={"domain": 2})
    model = build_model(cfg).eval()
    assert model.decision_level and isinstance(model.head_mlp, torch.nn.Identity)
    assert model.fusion.out_dim == 3  # built with C outputs, no head after it
    batch = make_batch(context={"domain": torch.tensor([0, 1, 0, 1])})
    out = model(batch)
    assert out.shape == ((4, 3) if level == "sample" else (4, 5, 3))
    if level == "step":  # the forward is exactly the fusion's output on the (context-conditioned) encodings
        masks = {m: batch.masks[m] & batch.padding_mask for m in DIMS}
        encoded = model.encode(batch.inputs, masks, batch.padding_mask)
        torch.testing.assert_close(out, model.fuse(encoded, masks, batch.context))


def test_modality_names_with_dots_build_train_and_save(tmp_path) -> None:
    dims = {"audio.lld": 3, "text.words": 4}
    model = build_model(ModelConfig(dims, out_dim=2, hidden=8, context_sizes={"site.id": 2})).eval()
    batch = Batch(
        inputs={m: torch.randn(2, 3, d) for m, d in dims.items()},
        masks={m: torch.ones(2, 3, dtype=torch.bool) for m in dims},
        padding_mask=torch.ones(2, 3, dtype=torch.bool),
        context={"site.id": torch.tensor([0, 1])},
    )
    out = model(batch)
    assert "audio.lld" in model.encoders and "projections.audio__lld.linear.weight" in model.state_dict()
    torch.testing.assert_close(load_model(save_model(model, tmp_path))(batch), out)


def test_modality_names_that_collide_once_dots_are_replaced_are_refused() -> None:
    with pytest.raises(ValueError, match=r"collide once '\.' is replaced by '__'"):
        build_model(ModelConfig({"a.b": 2, "a__b": 2}, out_dim=2, hidden=8))
