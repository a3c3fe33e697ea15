"""mmfuse._io.json_fields: the one JSON-safe ``to_dict`` of a dataclass."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmfuse._io import atomic_write_json, json_fields


@dataclass
class _Record:
    path: Path
    score: float
    counts: dict[int, int] = field(default_factory=dict)
    span: tuple[float, float] = (0.0, 1.0)
    values: Any = None
    live: object = None

    @property
    def doubled(self) -> float:
        return 2 * self.score


def _record(**kw: Any) -> _Record:
    return _Record(Path("runs") / "a", **{"score": 0.25, **kw})


def test_fields_in_declaration_order_with_exclusions() -> None:
    d = json_fields(_record(), exclude=("live", "values"))
    assert list(d) == ["path", "score", "counts", "span"]


@pytest.mark.parametrize(
    ("kw", "key", "expected"),
    [
        ({}, "path", str(Path("runs") / "a")),  # Path -> str
        ({}, "span", [0.0, 1.0]),  # tuple -> list
        ({"score": math.nan}, "score", None),  # non-finite -> None
        ({"score": -math.inf}, "score", None),
        ({"score": np.float32(0.5)}, "score", 0.5),  # numpy scalar -> Python number
        ({"values": np.arange(3, dtype=np.int64)}, "values", [0, 1, 2]),  # array -> list
        ({"values": [(1.0, math.inf)]}, "values", [[1.0, None]]),  # recursively
        ({"counts": {3: 1}}, "counts", {"3": 1}),  # keys become strings, as JSON writes them
    ],
)
def test_values_are_made_json_safe(kw: dict[str, Any], key: str, expected: Any) -> None:
    d = json_fields(_record(**kw))
    assert d[key] == expected and type(d[key]) is type(expected)
    json.dumps(d, allow_nan=False)  # no NaN, no numpy, no Path left


def test_named_attributes_properties_and_computed_values() -> None:
    d = json_fields(_record(), ["doubled", "score", "span"], span=[5.0], extra="x")
    assert d == {"doubled": 0.5, "score": 0.25, "span": [5.0], "extra": "x"}
    assert list(d) == ["doubled", "score", "span", "extra"]  # an override keeps its place; a new key comes last


def test_an_override_is_not_read_from_the_object() -> None:
    class Costly:
        @property
        def heavy(self) -> float:
            raise AssertionError("read although overridden")

    assert json_fields(Costly(), ["heavy"], heavy=1.0) == {"heavy": 1.0}


def test_the_dict_shares_nothing_with_the_object() -> None:
    rec = _record(counts={1: 2}, values=[1.0, 2.0])
    d = json_fields(rec)
    d["values"].append(3.0)
    d["counts"]["9"] = 9
    assert rec.values == [1.0, 2.0] and rec.counts == {1: 2}


def test_written_json_is_what_atomic_write_json_writes(tmp_path: Path) -> None:
    rec = _record(score=math.nan, values=np.ones(2, dtype=np.float32), counts={1: 2})
    by_fields = atomic_write_json(tmp_path / "a.json", json_fields(rec)).read_bytes()
    raw = atomic_write_json(tmp_path / "b.json", {k: getattr(rec, k) for k in rec.__dataclass_fields__}).read_bytes()
    assert by_fields == raw


@pytest.mark.parametrize("obj", [object(), _Record, {"a": 1}])
def test_a_non_dataclass_without_names_is_refused(obj: Any) -> None:
    with pytest.raises(TypeError, match="json_fields needs a dataclass instance when 'names' is not given"):
        json_fields(obj)
