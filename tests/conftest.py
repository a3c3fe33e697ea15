"""Shared test settings.

* The device under test comes from ``MMFUSE_TEST_DEVICE`` (default "cpu"), so the same suite runs on a GPU.
* Intra-op threads default to 1 (``MMFUSE_TEST_THREADS`` overrides): the models in tests are tiny, and
  several OpenMP threads fighting over 2 shared CI cores made them 10-100x slower.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("MMFUSE_TEST_THREADS", "1")))


def _test_device() -> str:
    device = os.environ.get("MMFUSE_TEST_DEVICE", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"MMFUSE_TEST_DEVICE={device!r} but CUDA is not available.")
    return device


@pytest.fixture(scope="session")
def device() -> str:
    """The torch device tests run on."""
    return _test_device()


TINY_BERT_WORDS = [
    "good",
    "bad",
    "movie",
    "really",
    "not",
    "it",
    "was",
    "the",
    "funny",
    "sad",
    "part",
    "a",
    "lot",
    "of",
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 16) and its word-piece tokenizer, saved with save_pretrained.

    Vocabulary: ``[PAD]`` (id 0), ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, then :data:`TINY_BERT_WORDS`.
    Tests that use it skip when transformers is not installed.
    """
    pytest.importorskip(
        "transformers", reason="the pretrained encoders need transformers (pip install 'mmfuse[extract]')"
    )
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS]) + "\n", encoding="utf-8"
    )
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(TINY_BERT_WORDS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    return folder
