"""token_ids: one tokenisation per text, the same ids and truncation count as tokenising twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmfuse.data.text import token_ids

pytest.importorskip("transformers", reason="token_ids needs transformers (pip install 'mmfuse[text]')")

MAX_LENGTH = 6  # [CLS] + 4 words + [SEP]
TEXTS = [
    "",  # only the special tokens
    "good",  # shorter than max_length
    "good bad movie really",  # exactly max_length with [CLS] and [SEP]
    "good bad movie really not",  # one token too many
    "it was the good movie " * 9,  # many windows' worth
    "zzz unknown words",  # [UNK]
    "not",
]


def _two_passes(folder: Path, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The previous token_ids: lengths from an untruncated pass, ids and attention from a truncated one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    out = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    cut = sum(n > max_length for n in lengths)
    return out["input_ids"].astype(np.float32), out["attention_mask"].astype(bool), cut


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer with no Rust ("fast") implementation: ByT5's, which needs no vocabulary file."""
    from transformers import ByT5Tokenizer

    folder = tmp_path_factory.mktemp("byt5")
    ByT5Tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("order", [slice(None), slice(None, None, -1)], ids=["in-order", "reversed"])
def test_ids_attention_and_count_equal_two_tokenisations(tiny_bert: Path, order: slice) -> None:
    texts = TEXTS[order]
    ids, cut = token_ids(texts, encoder=tiny_bert, max_length=MAX_LENGTH)
    expected_ids, attention, expected_cut = _two_passes(tiny_bert, texts, MAX_LENGTH)
    assert ids.dtype == np.float32 and ids.shape == (len(texts), MAX_LENGTH)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(ids != 0, attention)  # [PAD] is id 0: the attention mask is where ids are not
    assert cut == expected_cut == 2


def test_a_python_tokenizer_gives_the_same_ids_and_count(byte_tokenizer: Path) -> None:
    texts = ["", "abc", "abcd", "abcde", "abcdefghijklmnopqrstuvwxyz"]  # ByT5: one id per byte, then </s>
    ids, cut = token_ids(texts, encoder=byte_tokenizer, max_length=5)
    expected_ids, _, expected_cut = _two_passes(byte_tokenizer, texts, 5)
    np.testing.assert_array_equal(ids, expected_ids)
    assert cut == expected_cut == 2


def test_no_texts_give_no_rows(tiny_bert: Path) -> None:
    ids, cut = token_ids([], encoder=tiny_bert, max_length=MAX_LENGTH)
    assert ids.shape == (0, MAX_LENGTH) and ids.dtype == np.float32 and cut == 0


@pytest.mark.parametrize("bad", [2, 0, 6.0, True])
def test_a_max_length_without_room_for_a_token_is_refused(tiny_bert: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=rf"'max_length' parameter of token_ids .* above the 2 special .*Got {bad!r}"):
        token_ids(["good"], encoder=tiny_bert, max_length=bad)  # type: ignore[arg-type]
