"""docs/bad_input.md is generated from the case tables of tests/bad_input/ and must list every case."""

from __future__ import annotations

from bad_input_table import ACCEPTED, DOC, collect, render


def test_the_page_is_the_rendered_case_table() -> None:
    cases = collect()
    expected = render(cases)
    assert DOC.read_text(encoding="utf-8") == expected, (
        f"{DOC} is out of date with the test tables; regenerate it: python tests/bad_input/bad_input_table.py --write"
    )
    for case in cases:  # each case has its row under its surface
        assert f"| `{case.id}` |" in expected


def test_cases_are_distinct_and_say_what_they_check() -> None:
    cases = collect()
    keys = [(c.surface, c.id) for c in cases]
    assert len(keys) == len(set(keys)), "two cases share a surface and an id"
    whats = [(c.surface, c.what) for c in cases]
    assert len(whats) == len(set(whats)), "two cases of one surface describe the same input"
    for c in cases:
        assert c.what and c.error, c
        if c.error not in (ACCEPTED,) and c.error.startswith(("DataError", "ValueError", "TypeError", "exit 2")):
            assert c.names, f"{c.surface} / {c.id}: a refusal must say what its message names"
