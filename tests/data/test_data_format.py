from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _data_testing import CLS_SAMPLE, MODALITIES, make_record, records

from mmfuse.data import MultimodalDataset, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.errors import DataError, MmfuseWarning


def _label_for(task: TaskSpec, i: int, t: int) -> object:
    rng = np.random.default_rng(i)
    if task.type.value == "classification":
        return i % 3 if task.level.value == "sample" else rng.integers(0, 3, size=t)
    shape: tuple[int, ...] = () if task.level.value == "sample" else (t,)
    if task.target_dim > 1:
        shape = (*shape, task.target_dim)
    return float(rng.normal()) if shape == () else rng.normal(size=shape).astype(np.float32)


TASKS = [
    CLS_SAMPLE,
    TaskSpec("classification", "step", class_names=("a", "b", "c")),
    TaskSpec("regression", "sample"),
    TaskSpec("regression", "sample", target_dim=2),
    TaskSpec("regression", "step"),
    TaskSpec("regression", "step", target_dim=2),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: f"{t.type.value}-{t.level.value}-{t.target_dim}")
def test_round_trip_every_task(tmp_path: Path, task: TaskSpec) -> None:
    recs = []
    for i in range(5):
        rec = make_record(i, 3 + 2 * i, split=("train", "test")[i % 2], context={"site": f"x{i % 2}", "dev": "w"})
        rec.label = _label_for(task, i, len(rec))
        recs.append(rec)
    out = write_dataset(tmp_path / "ds", iter(recs), name="toy", modalities=MODALITIES, task=task, extra_meta={"k": 1})
    ds = open_dataset(out)
    assert isinstance(ds, MultimodalDataset)
    assert len(ds) == 5 and ds.task == task and ds.name == "toy" and ds.extra_meta == {"k": 1}
    assert list(ds.modalities) == ["audio", "video"] and ds.modalities["video"].kind == "embedding"
    assert ds.ids == [r.id for r in recs] and ds.groups == [r.group for r in recs]
    assert ds.splits == [r.split for r in recs] and ds.split_names == ["test", "train"]
    assert ds.context_vocab == {"dev": ("w",), "site": ("x0", "x1")}
    for rec, got in zip(recs, ds, strict=True):
        assert got.id == rec.id and got.group == rec.group and got.split == rec.split and got.context == rec.context
        for m in ("audio", "video"):
            np.testing.assert_array_equal(got.masks[m], rec.masks[m])
            expected = np.where(rec.masks[m][:, None], rec.values[m], 0.0)
            np.testing.assert_array_equal(got.values[m], expected)
            assert got.values[m].dtype == np.float32
        np.testing.assert_array_equal(got.timestamps, rec.timestamps)
        np.testing.assert_allclose(np.asarray(got.label), np.asarray(rec.label, dtype=np.asarray(got.label).dtype))
        if task.level.value == "sample" and task.target_dim == 1:
            assert isinstance(got.label, int if task.type.value == "classification" else float)


def test_meta_json_describes_files(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", records(6), name="toy", modalities=MODALITIES, task=CLS_SAMPLE)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "mmfuse-dataset" and meta["format_version"] == 2
    assert len(meta["meta_sha256"]) == 64
    assert meta["num_samples"] == 6 and meta["num_steps"] == sum(range(2, 8))
    assert meta["splits"] == {"test": 2, "train": 2, "val": 2}
    assert set(meta["files"]) == {
        "samples.parquet",
        "steps.parquet",
        "modalities/audio.parquet",
        "modalities/video.parquet",
    }
    assert meta["files"]["modalities/audio.parquet"]["rows"] == meta["num_steps"]
    assert pq.read_table(out / "modalities" / "audio.parquet").schema.field("values").type.list_size == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_no_timestamps_and_sample_labels_writes_no_steps_file(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", records(3, timestamps=False), name="t", modalities=MODALITIES, task=CLS_SAMPLE)
    assert not (out / "steps.parquet").exists()
    ds = open_dataset(out)
    assert ds[0].timestamps is None
    np.testing.assert_array_equal(ds.sample_labels, [0, 1, 2])


def test_nan_at_masked_steps_is_stored_as_zero(tmp_path: Path) -> None:
    rec = make_record(0, 4)
    rec.masks["audio"] = np.array([True, False, True, False])
    rec.values["audio"][1] = np.nan
    rec.values["audio"][3] = np.inf
    ds = open_dataset(write_dataset(tmp_path / "d", [rec], name="t", modalities=MODALITIES, task=CLS_SAMPLE))
    got = ds[0].values["audio"]
    assert np.isfinite(got).all() and (got[[1, 3]] == 0).all()


def test_missing_masks_entry_means_present(tmp_path: Path) -> None:
    rec = make_record(0, 4)
    del rec.masks["video"]
    ds = open_dataset(write_dataset(tmp_path / "d", [rec], name="t", modalities=MODALITIES, task=CLS_SAMPLE))
    assert ds[0].masks["video"].all()


def test_lazy_modality_loading(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", records(6), name="t", modalities=MODALITIES, task=CLS_SAMPLE)
    # Removing a modality file does not matter until that modality is needed.
    (out / "modalities" / "video.parquet").unlink()
    ds = open_dataset(out)
    assert ds.loaded_modalities() == []
    assert ds.split("train").ids == ["s0", "s3"] and ds.sample_labels.tolist() == [0, 1, 2, 0, 1, 2]
    values, mask = ds.stacked("audio")
    assert ds.loaded_modalities() == ["audio"]
    assert values.shape == (sum(range(2, 8)), 3) and mask.shape == (values.shape[0],)
    with pytest.raises(DataError, match=r"video\.parquet is missing"):
        ds[0]


def test_views_split_subset_stacked_transform(tmp_path: Path) -> None:
    recs = list(records(6))
    ds = open_dataset(write_dataset(tmp_path / "d", iter(recs), name="t", modalities=MODALITIES, task=CLS_SAMPLE))
    val = ds.split("val")
    assert val.ids == ["s1", "s4"] and val.lengths.tolist() == [3, 6]
    values, mask = val.stacked("audio")
    exp_mask = np.concatenate([recs[1].masks["audio"], recs[4].masks["audio"]])
    np.testing.assert_array_equal(mask, exp_mask)
    exp_vals = np.concatenate([recs[k].values["audio"] for k in (1, 4)])
    np.testing.assert_array_equal(values, np.where(exp_mask[:, None], exp_vals, 0))
    sub = ds.subset([5, 0, -1])
    assert sub.ids == ["s5", "s0", "s5"] and sub[1].id == "s0"
    assert ds.subset([]).ids == [] and ds.subset([]).stacked("video")[0].shape == (0, 2)
    assert sub.split("train").ids == ["s0"]  # a split of a view keeps only that view's samples
    with pytest.raises(IndexError):
        ds.subset([6])
    with pytest.raises(ValueError, match=r"Unknown split 'dev'.*\['test', 'train', 'val'\]"):
        ds.split("dev")
    with pytest.raises(ValueError, match="Unknown modality 'depth'"):
        ds.stacked("depth")

    def double(rec: SequenceRecord) -> SequenceRecord:
        return replace(rec, values={m: v * 2 for m, v in rec.values.items()})

    doubled = val.with_transform(double)
    np.testing.assert_array_equal(doubled[0].values["video"], 2 * val[0].values["video"])
    assert doubled.split("val")[1].id == "s4"  # views keep the transform
    np.testing.assert_array_equal(doubled.split("val")[1].values["video"], 2 * val[1].values["video"])
    # records are copies: editing one does not change the data set
    r = ds[0]
    r.values["audio"][:] = 7
    assert not (ds[0].values["audio"] == 7).all()


def test_dataset_pickles_without_cache(tmp_path: Path) -> None:
    import pickle

    ds = open_dataset(write_dataset(tmp_path / "d", records(3), name="t", modalities=MODALITIES, task=CLS_SAMPLE))
    ds.stacked("audio")
    clone = pickle.loads(pickle.dumps(ds.split("train")))
    assert clone.loaded_modalities() == [] and clone[0].id == "s0"


# ---------------------------------------------------------------------------------------------------------------
# atomic writes


def test_error_midway_leaves_nothing(tmp_path: Path) -> None:
    def gen():
        yield from records(4)
        bad = make_record(10, 3)
        bad.values["audio"][1, 2] = np.nan
        bad.masks["audio"][1] = True
        yield bad

    with pytest.raises(DataError, match=r"Sample 's10', modality 'audio', step 1: .*not finite"):
        write_dataset(tmp_path / "d", gen(), name="t", modalities=MODALITIES, task=CLS_SAMPLE)
    assert list(tmp_path.iterdir()) == []


def test_exception_from_the_iterator_leaves_nothing(tmp_path: Path) -> None:
    def gen():
        yield from records(3)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_dataset(tmp_path / "d", gen(), name="t", modalities=MODALITIES, task=CLS_SAMPLE)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rules(tmp_path: Path) -> None:
    target = tmp_path / "d"
    write_dataset(target, records(2), name="first", modalities=MODALITIES, task=CLS_SAMPLE)
    with pytest.raises(DataError, match="already exists; pass overwrite=True"):
        write_dataset(target, records(3), name="second", modalities=MODALITIES, task=CLS_SAMPLE)
    assert open_dataset(target).name == "first"
    # a failed overwrite keeps the old data set intact
    bad = [make_record(0, 2), make_record(0, 2)]
    with pytest.raises(DataError, match="duplicate id"):
        write_dataset(target, bad, name="second", modalities=MODALITIES, task=CLS_SAMPLE, overwrite=True)
    assert open_dataset(target).name == "first" and len(open_dataset(target)) == 2
    write_dataset(target, records(3), name="second", modalities=MODALITIES, task=CLS_SAMPLE, overwrite=True)
    assert open_dataset(target).name == "second" and len(open_dataset(target)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not an mmfuse data set"):
        write_dataset(other, records(1), name="x", modalities=MODALITIES, task=CLS_SAMPLE, overwrite=True)
    assert (other / "keep.txt").read_text() == "x"


# ---------------------------------------------------------------------------------------------------------------
# validation on write


def _bad(mutate, match: str, tmp_path: Path, task: TaskSpec = CLS_SAMPLE, n: int = 1) -> None:
    recs = [make_record(i, 4) for i in range(n)]
    mutate(recs[-1])
    with pytest.raises(DataError, match=match):
        write_dataset(tmp_path / "d", recs, name="t", modalities=MODALITIES, task=task)
    assert not (tmp_path / "d").exists()


def _set(attr: str, value: object):
    def f(rec: SequenceRecord) -> None:
        setattr(rec, attr, value)

    return f


def test_rejects_non_finite_present_value(tmp_path: Path) -> None:
    def f(rec: SequenceRecord) -> None:
        rec.values["video"][2, 0] = np.inf

    _bad(f, r"Sample 's0', modality 'video', step 2: the values are not finite", tmp_path)


def test_rejects_dim_mismatch(tmp_path: Path) -> None:
    def f(rec: SequenceRecord) -> None:
        rec.values["audio"] = np.zeros((4, 5), np.float32)

    _bad(f, r"Sample 's0', modality 'audio': values must have shape \[T, 3\]. Got \(4, 5\)", tmp_path)


def test_rejects_mask_length_mismatch(tmp_path: Path) -> None:
    def f(rec: SequenceRecord) -> None:
        rec.masks["video"] = np.ones(3, bool)

    _bad(f, r"Sample 's0', modality 'video': the mask has shape \(3,\) but the values have 4 steps", tmp_path)


def test_rejects_non_bool_mask(tmp_path: Path) -> None:
    def f(rec: SequenceRecord) -> None:
        rec.masks["video"] = np.ones(4, np.int64)

    _bad(f, "the mask must be a bool array", tmp_path)


def test_rejects_modalities_of_different_lengths(tmp_path: Path) -> None:
    def f(rec: SequenceRecord) -> None:
        rec.values["video"] = np.zeros((5, 2), np.float32)
        rec.masks["video"] = np.ones(5, bool)

    _bad(f, r"modality 'video': has 5 steps but the other modalities have 4", tmp_path)


def test_rejects_empty_sequence(tmp_path: Path) -> None:
    def f(rec: SequenceRecord) -> None:
        rec.values = {"audio": np.zeros((0, 3)), "video": np.zeros((0, 2))}
        rec.masks = {}

    _bad(f, r"Sample 's0', modality 'audio': the sequence is empty", tmp_path)


def test_rejects_duplicate_ids(tmp_path: Path) -> None:
    _bad(_set("id", "s0"), r"Sample 's0' \(record #1\): duplicate id", tmp_path, n=2)


def test_rejects_unknown_and_missing_modality(tmp_path: Path) -> None:
    def unknown(rec: SequenceRecord) -> None:
        rec.values["depth"] = np.zeros((4, 1))

    _bad(unknown, r"Sample 's0': unknown modality 'depth'; the data set declares \['audio', 'video'\]", tmp_path)

    def missing(rec: SequenceRecord) -> None:
        del rec.values["video"]

    _bad(missing, r"modality 'video' is missing from 'values'.*all-False mask", tmp_path)


@pytest.mark.parametrize(
    ("label", "match"),
    [
        (1.0, r"sample-level classification label must be an int class index. Got 1.0 \(float\)"),
        ("b", r"must be an int class index. Got 'b' \(str\)"),
        (True, r"must be an int class index. Got True"),
        (3, r"class index 3 is out of range; expected 0..2"),
        (-1, r"class index -1 is out of range"),
    ],
)
def test_rejects_bad_classification_labels(tmp_path: Path, label: object, match: str) -> None:
    _bad(_set("label", label), r"Sample 's0': .*" + match, tmp_path)


def test_rejects_bad_step_labels(tmp_path: Path) -> None:
    task = TaskSpec("classification", "step", class_names=("a", "b"))
    _bad(_set("label", np.array([0, 1, 0])), r"step-level label must have shape \(4,\). Got \(3,\)", tmp_path, task)
    _bad(_set("label", np.array([0, 1, 2, 0])), r"class index 2 at step 2 is out of range", tmp_path, task)
    _bad(_set("label", np.array([0.0, 1, 1, 0])), r"must be an integer array of class indices", tmp_path, task)


def test_rejects_bad_regression_targets(tmp_path: Path) -> None:
    reg = TaskSpec("regression", "sample")
    _bad(_set("label", float("nan")), r"Sample 's0': the regression target is not finite", tmp_path, reg)
    _bad(_set("label", "0.5"), r"regression label must be numeric. Got the string '0.5'", tmp_path, reg)
    step = TaskSpec("regression", "step")
    _bad(
        _set("label", np.array([0.0, 1.0, np.inf, 2.0])),
        r"not finite \(inf, or NaN in some .*\) at step 2",
        tmp_path,
        step,
    )
    vec_step = TaskSpec("regression", "step", target_dim=2)
    part_nan = np.array([[0.0, 1.0], [np.nan, 1.0], [0.0, 0.0], [1.0, 1.0]])
    _bad(_set("label", part_nan), r"NaN in some components only\) at step 1", tmp_path, vec_step)
    vec = TaskSpec("regression", "sample", target_dim=2)
    _bad(_set("label", 1.0), r"regression label must have shape \(2,\). Got \(\)", tmp_path, vec)


def test_rejects_bad_timestamps_and_context(tmp_path: Path) -> None:
    _bad(
        _set("timestamps", np.array([0.0, 1.0, 1.0, 2.0])),
        r"Sample 's0', step 2: timestamps must be strictly",
        tmp_path,
    )
    _bad(_set("timestamps", None), r"Sample 's1': lacks timestamps while earlier records have them", tmp_path, n=2)
    _bad(_set("context", {"site": "a"}), r"Sample 's1': context keys \['site'\] differ", tmp_path, n=2)
    _bad(_set("context", {"site": 3}), r"context 'site' must map a non-empty str name to a str", tmp_path)


def test_rejects_bad_ids_groups_and_non_records(tmp_path: Path) -> None:
    _bad(_set("group", ""), r"Sample 's0': the group must be a non-empty string", tmp_path)
    _bad(_set("id", ""), r"Record #0 has an invalid id ''", tmp_path)
    with pytest.raises(DataError, match="Record #0 passed to write_dataset is a dict"):
        write_dataset(tmp_path / "d", [{"id": "x"}], name="t", modalities=MODALITIES, task=CLS_SAMPLE)  # type: ignore[list-item]
    with pytest.raises(DataError, match="got no records"):
        write_dataset(tmp_path / "d", [], name="t", modalities=MODALITIES, task=CLS_SAMPLE)
    assert list(tmp_path.iterdir()) == []


def test_spec_validation() -> None:
    from mmfuse.data import ModalitySpec

    with pytest.raises(ValueError, match="'dim' parameter of ModalitySpec"):
        ModalitySpec("x", 0)
    with pytest.raises(ValueError, match="'kind' parameter"):
        ModalitySpec("x", 1, kind="image")
    with pytest.raises(ValueError, match="'name' parameter"):
        ModalitySpec("../x", 1)
    with pytest.raises(ValueError, match="at least two distinct"):
        TaskSpec("classification", "sample", class_names=("a",))
    with pytest.raises(ValueError, match="'level' parameter"):
        TaskSpec("regression", "frame")  # type: ignore[arg-type]
    assert TaskSpec("regression", "step", target_dim=3).out_dim == 3


# ---------------------------------------------------------------------------------------------------------------
# corrupt / truncated files


@pytest.fixture
def written(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "d", records(6), name="t", modalities=MODALITIES, task=CLS_SAMPLE)


def _rewrite_meta(path: Path, fn) -> None:
    """Edit meta.json and re-seal it (as a tool that knows the format would), so the content checks are reached."""
    from mmfuse.data.format import _meta_digest

    meta = json.loads((path / "meta.json").read_text())
    fn(meta)
    meta["meta_sha256"] = _meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def test_missing_or_bad_meta(written: Path) -> None:
    (written / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=r"meta\.json cannot be read as JSON"):
        open_dataset(written)
    (written / "meta.json").unlink()
    with pytest.raises(DataError, match=r"meta\.json is missing"):
        open_dataset(written)
    with pytest.raises(DataError, match="is not a directory"):
        open_dataset(written / "nope")


def test_meta_with_future_version_or_missing_keys(written: Path) -> None:
    _rewrite_meta(written, lambda m: m.update(format_version=99))
    with pytest.raises(DataError, match="format_version 99"):
        open_dataset(written)
    _rewrite_meta(written, lambda m: (m.update(format_version=1), m.pop("task")))
    with pytest.raises(DataError, match=r"meta\.json is malformed"):
        open_dataset(written)


def test_truncated_modality_file(written: Path) -> None:
    path = written / "modalities" / "audio.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = open_dataset(written)
    with pytest.raises(DataError, match=r"audio\.parquet is corrupt or was modified"):
        ds.stacked("audio")


def test_bad_parquet_and_wrong_row_count_with_matching_checksums(written: Path) -> None:
    # With the checksum updated, the Parquet reader and the row-count check still catch the damage.
    path = written / "samples.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    _rewrite_meta(written, lambda m: m["files"]["samples.parquet"].update(sha256=_sha(path)))
    with pytest.raises(DataError, match=r"samples\.parquet is not a readable Parquet file"):
        open_dataset(written)

    audio = written / "modalities" / "audio.parquet"
    table = pq.read_table(audio)
    pq.write_table(table.slice(0, table.num_rows - 1), audio)
    _rewrite_meta(written, lambda m: m["files"]["modalities/audio.parquet"].update(sha256=_sha(audio)))
    (written / "samples.parquet").unlink()
    with pytest.raises(DataError, match=r"samples\.parquet is missing"):
        open_dataset(written)


def test_wrong_row_count(written: Path) -> None:
    audio = written / "modalities" / "audio.parquet"
    table = pq.read_table(audio)
    pq.write_table(table.slice(0, table.num_rows - 1), audio)
    _rewrite_meta(written, lambda m: m["files"]["modalities/audio.parquet"].update(sha256=_sha(audio)))
    ds = open_dataset(written)
    with pytest.raises(
        DataError, match=rf"audio\.parquet has {table.num_rows - 1} rows; meta\.json records {table.num_rows}"
    ):
        ds[0]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_leftover_temp_dirs_are_not_data_sets(tmp_path: Path) -> None:
    # A crash between mkdtemp and rename leaves only a hidden ".<name>.tmp-*" folder, never the target.
    (tmp_path / ".d.tmp-abc").mkdir()
    with pytest.raises(DataError):
        open_dataset(tmp_path / "d")
    with pytest.warns(MmfuseWarning, match=r"left alone .*\.d\.tmp-abc"):
        out = write_dataset(tmp_path / "d", records(1), name="t", modalities=MODALITIES, task=CLS_SAMPLE)
    assert os.path.isdir(out) and len(open_dataset(out)) == 1


def test_target_created_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    # Another writer finishes first while we stream: our rename fails and their data set survives.
    target = tmp_path / "d"

    def gen():
        yield from records(2)
        write_dataset(target, records(3), name="other", modalities=MODALITIES, task=CLS_SAMPLE)

    with pytest.raises(DataError, match="created by another writer"):
        write_dataset(target, gen(), name="mine", modalities=MODALITIES, task=CLS_SAMPLE)
    assert open_dataset(target).name == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
