"""Bad records through :func:`mmfuse.data.collate` (records straight into a batch, without a data set).

``collate`` is what a user's own loader calls on records it built itself, so nothing has validated them: a
record that does not fit the batch is a ``DataError`` naming the sample, the modality and the two shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from bad_input_table import Case, assert_names, params

from mmfuse.data import SequenceRecord, collate
from mmfuse.errors import DataError

SURFACE = "collate (records into a batch)"


def _record(rid: str, **changes: Any) -> SequenceRecord:
    fields: dict[str, Any] = {"values": {"x": np.ones((3, 2), np.float32)}, "masks": {"x": np.ones(3, bool)}}
    fields.update(changes)
    return SequenceRecord(rid, "g", "train", fields["values"], fields["masks"], 0)


# (id, what, changes to the second record, expected error, names)
_ROWS: list[tuple[str, str, dict[str, Any], str, tuple[str, ...]]] = [
    (
        "mask-short",
        "a mask one step shorter than the values",
        {"masks": {"x": np.ones(2, bool)}},
        "DataError",
        ("sample 'bad', modality 'x': mask (2,), expected (3,)",),
    ),
]

CASES = [Case(SURFACE, cid, what, error, names, changes) for cid, what, changes, error, names in _ROWS]


@pytest.mark.parametrize("case", params(CASES))
def test_collate(case: Case) -> None:
    with pytest.raises(DataError) as info:
        collate([_record("ok"), _record("bad", **case.data)])
    assert_names(str(info.value), *case.names)
