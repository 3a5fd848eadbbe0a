"""Row keys in canonical form: single-column keys as Postgres prints them, composite keys as
compact JSON arrays of their columns' canonical texts; and their query parameters."""

from __future__ import annotations

import pytest

from tests.support.factories import target

COMPOSITE = target(key_columns=("tenant", "id", "slug"), key_types=("int4", "uuid", "text"))


def test_composite_keys_are_canonical_whatever_json_form_they_arrive_in() -> None:
    a = COMPOSITE.canonical_key([7, "00000000-0000-0000-0000-00000000000A", 'ü,"x'])
    b = COMPOSITE.canonical_key(["7", "00000000-0000-0000-0000-00000000000a", 'ü,"x'])
    assert a == b == '["7","00000000-0000-0000-0000-00000000000a","ü,\\"x"]'
    assert COMPOSITE.key_params([a]) == {
        "keys": [a],
        "k0": ["7"],
        "k1": ["00000000-0000-0000-0000-00000000000a"],
        "k2": ['ü,"x'],
    }


@pytest.mark.parametrize(
    "raw",
    [
        7,
        [7, "00000000-0000-0000-0000-00000000000a"],
        [7, "not-a-uuid", "x"],
        [True, None, "x"],
        {"a": 1},
    ],
)
def test_malformed_composite_keys_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="row key"):
        COMPOSITE.canonical_key(raw)


def test_single_keys_keep_their_scalar_form() -> None:
    single = target()
    assert single.canonical_key(" 42") == "42"
    assert single.key_params(["42"]) == {"keys": ["42"], "k0": ["42"]}
    dated = target(key_types=("date",))
    assert dated.canonical_key("2026-01-02") == "2026-01-02"
