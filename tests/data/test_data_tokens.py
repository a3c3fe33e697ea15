"""The "tokens" modality kind: token ids per step, validated at write and at open, never normalised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.data._spec import MAX_TOKEN_ID
from mmfuse.errors import DataError
from mmfuse.evaluate.protocol import fit_normalizers
from mmfuse.preprocess import IdentityNormalizer

TASK = TaskSpec("classification", "sample", class_names=("a", "b"))
SPECS = [ModalitySpec("audio", 2), ModalitySpec("text", 4, kind="tokens")]


def _record(i: int, ids: np.ndarray, mask: np.ndarray | None = None) -> SequenceRecord:
    t = ids.shape[0]
    masks = {"text": mask} if mask is not None else {}
    return SequenceRecord(
        id=f"s{i}",
        group=f"g{i}",
        split="train",
        values={"audio": np.full((t, 2), float(i), dtype=np.float32), "text": ids},
        masks=masks,
        label=i % 2,
    )


IDS = np.array([[101, 7, 102, 0], [101, 9, 11, 102]], dtype=np.float32)


def test_token_ids_round_trip_and_are_not_normalised(tmp_path: Path) -> None:
    path = write_dataset(
        tmp_path / "d", [_record(0, IDS), _record(1, IDS[::-1])], name="t", modalities=SPECS, task=TASK
    )
    ds = open_dataset(path)
    assert ds.modalities["text"].kind == "tokens"
    np.testing.assert_array_equal(ds[0].values["text"], IDS)
    norms = fit_normalizers(ds)
    assert isinstance(norms["text"], IdentityNormalizer)
    np.testing.assert_array_equal(norms(ds[1]).values["text"], IDS[::-1])


@pytest.mark.parametrize(
    ("bad", "what"),
    [(2.5, "a fraction"), (-1.0, "a negative id"), (float(MAX_TOKEN_ID + 1), "an id float32 cannot hold exactly")],
)
def test_a_present_step_that_is_not_token_ids_is_refused_naming_the_place(
    tmp_path: Path, bad: float, what: str
) -> None:
    ids = IDS.copy()
    ids[1, 2] = bad
    with pytest.raises(DataError, match=r"Sample 's0', modality 'text' \(kind 'tokens'\), step 1: .*token ids"):
        write_dataset(tmp_path / "d", [_record(0, ids)], name="t", modalities=SPECS, task=TASK)


def test_missing_steps_are_not_checked(tmp_path: Path) -> None:
    ids = IDS.copy()
    ids[1, 2] = 2.5  # at a step marked missing: stored as zeros, like any missing step
    path = write_dataset(
        tmp_path / "d", [_record(0, ids, np.array([True, False]))], name="t", modalities=SPECS, task=TASK
    )
    np.testing.assert_array_equal(open_dataset(path)[0].values["text"][1], np.zeros(4))


def test_a_stored_file_whose_kind_became_tokens_is_checked_at_open(tmp_path: Path) -> None:
    from mmfuse.data.format import _meta_digest

    specs = [ModalitySpec("audio", 2), ModalitySpec("text", 4)]  # continuous: fractions are fine here
    path = write_dataset(tmp_path / "d", [_record(0, IDS + 0.5)], name="t", modalities=specs, task=TASK)
    meta = json.loads((path / "meta.json").read_text())
    for entry in meta["modalities"]:
        if entry["name"] == "text":
            entry["kind"] = "tokens"
    meta["meta_sha256"] = _meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    ds = open_dataset(path)
    with pytest.raises(DataError, match=r"step 0 of sample 's0' \(row 0\) of the 'tokens' modality 'text'"):
        ds[0]


def test_model_config_for_needs_an_encoder_for_a_token_modality(tmp_path: Path) -> None:
    from mmfuse.evaluate.protocol import model_config_for

    ds = open_dataset(write_dataset(tmp_path / "d", [_record(0, IDS)], name="t", modalities=SPECS, task=TASK))
    with pytest.raises(ValueError, match=r"modality 'text' of data set 't' holds token ids .*pretrained="):
        model_config_for(ds, "concat")
    spec = {"text": {"source": "minilm"}}
    assert model_config_for(ds, "concat", pretrained=spec).pretrained["text"]["source"] == "minilm"
    assert model_config_for(ds, "unimodal-audio", pretrained=spec).pretrained == {}  # the text encoder is not in use
