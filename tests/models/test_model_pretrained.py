"""A token modality read by a pretrained encoder inside MultimodalModel (the tiny random BERT of conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmfuse.fusion import list_fusions
from mmfuse.layers.pretrained import PretrainedTextEncoder
from mmfuse.models import ModelConfig, build_model
from mmfuse.types import Batch

L = 7  # token ids per step
TEXTS = ["good movie", "it was not funny", "bad", "the sad part", "a lot of really good"]


def _ids(folder: Path, texts: list[str]) -> torch.Tensor:
    """Token ids ``[len(texts), L]`` float32, right-padded with [PAD] (id 0), as a "tokens" modality stores them."""
    enc = PretrainedTextEncoder(folder)
    tok = enc.tokenizer(texts, padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    return tok["input_ids"].float()


def _batch(folder: Path, text_mask: torch.Tensor) -> Batch:
    b, t = text_mask.shape
    texts = [TEXTS[i % len(TEXTS)] for i in range(b * t)]
    ids = _ids(folder, texts).view(b, t, L)  # [B, T, L]
    ones = torch.ones(b, t, dtype=torch.bool)
    return Batch(
        inputs={"text": ids, "audio": torch.randn(b, t, 3, generator=torch.Generator().manual_seed(1))},
        masks={"text": text_mask, "audio": ones},
        padding_mask=ones,
    )


def _config(folder: Path, **kw) -> ModelConfig:
    pretrained = {"text": {"source": str(folder), **kw.pop("spec", {})}}
    return ModelConfig({"audio": 3, "text": L}, out_dim=2, hidden=8, pretrained=pretrained, **kw)


def test_config_fills_defaults_round_trips_and_refuses_bad_specs(tiny_bert: Path) -> None:
    cfg = _config(tiny_bert, spec={"max_length": 5})
    assert cfg.pretrained["text"] == {
        "source": str(tiny_bert),
        "pooling": "mean",
        "max_length": 5,
        "normalize": False,
        "gradient_checkpointing": False,
        "trainable": True,
    }
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"names modalities \['video'\] that are not in 'modality_dims'"):
        ModelConfig({"text": L}, out_dim=2, pretrained={"video": {"source": "minilm"}})
    with pytest.raises(ValueError, match=r"ModelConfig.pretrained\['text'\] has unknown key\(s\) \['lr'\]"):
        ModelConfig({"text": L}, out_dim=2, pretrained={"text": {"source": "minilm", "lr": 1}})
    with pytest.raises(ValueError, match=r"ModelConfig.pretrained\['text'\] needs a 'source'"):
        ModelConfig({"text": L}, out_dim=2, pretrained={"text": {"pooling": "mean"}})
    with pytest.raises(ValueError, match=r"'trainable' parameter of ModelConfig.pretrained\['text'\] must be a bool"):
        ModelConfig({"text": L}, out_dim=2, pretrained={"text": {"source": "minilm", "trainable": "yes"}})


def test_each_present_step_is_its_text_embedding_and_missing_steps_are_ignored(tiny_bert: Path) -> None:
    model = build_model(_config(tiny_bert)).eval()
    mask = torch.tensor([[True, False, True], [True, True, False]])
    batch = _batch(tiny_bert, mask)
    encoder = model.pretrained["text"]
    with torch.no_grad():
        embedded = model._embed_tokens("text", batch.inputs["text"], mask)  # [B, T, D]
        ids = batch.inputs["text"][1, 1:2]  # one step alone, its own padding
        alone = encoder(ids.long(), (ids != encoder.pad_id).long())
        torch.testing.assert_close(embedded[1, 1], alone[0], atol=1e-5, rtol=1e-5)
        assert embedded[~mask].abs().sum() == 0
        before = model(batch)
        garbage = batch.inputs["text"].clone()
        garbage[~mask] = 1e9  # not token ids, but at missing steps: never read
        batch.inputs["text"] = garbage
        torch.testing.assert_close(model(batch), before)


def test_bad_token_ids_at_a_present_step_are_refused(tiny_bert: Path) -> None:
    model = build_model(_config(tiny_bert)).eval()
    batch = _batch(tiny_bert, torch.ones(1, 2, dtype=torch.bool))
    batch.inputs["text"][0, 1, 2] = 19.0  # the tiny vocabulary has ids 0..18
    with pytest.raises(ValueError, match=r"modality 'text'.*whole numbers in \[0, 18\]\)\. Present step 1 .* 19\.0 at"):
        model(batch)


@pytest.mark.parametrize("trainable", [True, False])
def test_gradients_reach_the_backbone_only_when_trainable(tiny_bert: Path, trainable: bool) -> None:
    model = build_model(_config(tiny_bert, spec={"trainable": trainable})).train()
    model(_batch(tiny_bert, torch.ones(2, 2, dtype=torch.bool))).sum().backward()
    backbone = list(model.pretrained["text"].backbone.parameters())
    assert all((p.grad is not None) == trainable for p in backbone)
    assert model.pretrained["text"].backbone.training == trainable  # a frozen backbone runs without dropout
    assert model.projections["text"].linear.weight.grad is not None


@pytest.mark.parametrize("fusion", list_fusions())
def test_every_fusion_runs_with_a_pretrained_token_modality(tiny_bert: Path, fusion: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(tiny_bert, fusion=fusion, label_level="step")).train()
    mask = torch.tensor([[True, False, True], [False, False, False]])  # the second sequence has no text
    out = model(_batch(tiny_bert, mask))
    assert out.shape == (2, 3, 2) and bool(torch.isfinite(out).all())
    out.sum().backward()
    grads = [p.grad for p in model.pretrained["text"].backbone.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
