"""fit_staged with a transformer expert: a pretrained encoder fine-tuned on a token modality, then the fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.layers.pretrained import PretrainedTextEncoder
from mmfuse.train import ExpertStage, TrainConfig, fit_staged
from mmfuse.train.staged import expert_features

L = 6
TEXTS = ["good movie", "bad movie", "really funny", "not funny", "sad part", "a lot of good"]


def test_a_fine_tuned_text_expert_feeds_the_fusion_stage(tiny_bert: Path, tmp_path: Path) -> None:
    enc = PretrainedTextEncoder(tiny_bert)
    ids = enc.tokenizer(TEXTS, padding="max_length", max_length=L, truncation=True, return_tensors="np")["input_ids"]
    rng = np.random.default_rng(0)
    records = [
        SequenceRecord(
            id=f"s{i}",
            group=f"s{i}",
            split=("train", "train", "val", "test")[i % 4],
            values={"text": ids[[i % 6, (i + 1) % 6]].astype(np.float32), "audio": rng.normal(size=(2, 2))},
            masks={},
            label=np.array([i % 2, (i + 1) % 2]),
        )
        for i in range(8)
    ]
    ds = open_dataset(
        write_dataset(
            tmp_path / "d",
            records,
            name="tok",
            modalities=[ModalitySpec("audio", 2), ModalitySpec("text", L, kind="tokens")],
            task=TaskSpec("classification", "step", class_names=("neg", "pos")),
        )
    )
    fast = {"epochs": 1, "scheduler": "none", "patience": None, "device": "cpu", "batch_size": 2}
    expert = ExpertStage(
        "text",
        model={"hidden": 8, "encoder": "none", "pretrained": {"text": {"source": str(tiny_bert)}}},
        train=TrainConfig(backbone_lr=1e-4, **fast),
    )
    torch.manual_seed(0)
    result = fit_staged(
        ds.split("train"),
        ds.split("val"),
        expert,
        fusion={"fusion": "gated", "hidden": 8, "encoder": "none"},
        fusion_train=TrainConfig(**fast),
        test=ds.split("test"),
        out_dir=tmp_path / "out",
    )
    assert sorted(result.features.modalities) == ["audio", "text_expert"]
    assert result.features.modalities["text_expert"].kind == "embedding"
    trained = result.expert_models["text_expert"].pretrained["text"].backbone.embeddings.word_embeddings.weight
    assert not torch.equal(trained, enc.backbone.embeddings.word_embeddings.weight)  # the backbone was fine-tuned
    # Texts of several sequences share the encoder's batch (their token padding masked): as each sequence alone.
    fine_tuned, texts = result.expert_models["text_expert"], [ds[i] for i in range(len(ds))]
    for together, alone in zip(
        expert_features(fine_tuned, texts, batch_size=4), expert_features(fine_tuned, texts, batch_size=1), strict=True
    ):
        assert torch.allclose(torch.from_numpy(together), torch.from_numpy(alone), rtol=1e-5, atol=1e-6)
