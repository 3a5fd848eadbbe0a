"""Every key type round-trips exactly, or watch() refuses it up front (issue 24 §2).

A property test: Hypothesis draws a table whose row key has 1-3 columns of the types below, rows
with edge values (NaN and infinities where a type has them, trailing spaces in char(n), -0,
numerics beyond a double's precision, timestamps at their limits, enum labels with quotes, odd
and very long text), an application session with unusual settings (DateStyle, IntervalStyle,
extra_float_digits, TimeZone, bytea_output: the triggers turn keys into text in *its* session,
the worker reads them in its own), and how the table is watched: a content column, a chunked
target, or a content function that fails for some rows until they are cured (dead letters, then
`embed-worker failures --retry`). Then the worker (in-process `run --once`, a tiny model) must
embed every row: those there before watch() (a backfill), those inserted after (the insert
trigger), and all of them again after an UPDATE (the update trigger, which matches old and new
rows by key). Each mode but the chunked one also runs with the vectors in a side table
(`store => 'side'`, keyed like the table: its key columns, typmods and collations included, are
the table's, and each side row holds the md5 of its row's current content). A type watch()
refuses must be refused with an error naming the column, its type and why.

One database serves every example (each in a schema of its own, dropped afterwards): a database
per example would be too slow. `KEY_TYPE_EXAMPLES` sets how many random examples CI runs
(derandomized); the soak variant runs more, randomized.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_run
from hypothesis import strategies as st
from psycopg import sql

from tests.support.jobs import JOBS, clear_queue
from worker.cli import main as cli
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
St = st.SearchStrategy

# --- values -------------------------------------------------------------------------------------
# Each strategy draws the *text* of a value, as the type's input function reads it (values are
# inserted as 'text'::type, so each type's own parser decides what they are).

ODD = "'\"\\,{}()[] \t\n\r:;=>-+.#$%&*/?@^`|~\u00a0\u2028\u00e9\u4e2d\U0001f600"
odd_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
edgy_text = st.one_of(
    st.sampled_from(["", " ", "  trailing  ", "NULL", "null", "{}", "[1]", '"q"', "a,b", "\\"]),
    st.text(alphabet=ODD, max_size=12),
    odd_text.filter(lambda s: len(s.encode()) < 300),
    # very long, and compressible: a btree entry of up to three such columns fits
    st.integers(1000, 2000).map(lambda n: ("long key " * n)[:n]),
)
ints = {
    "smallint": st.integers(-(2**15), 2**15 - 1),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "bigint": st.integers(-(2**63), 2**63 - 1),
}
numeric = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "-0",
            "0.000",
            "123456789012345678901234567890.123456789012345678901",
            "-0.0000000000000000000000000000001",
            "9007199254740993",  # 2**53 + 1: the first integer a double cannot hold
            "1e-30",
            "12345678901234567890",
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False)
    .filter(lambda d: abs(d.adjusted()) < 1000)
    .map(str),
)
floats = st.one_of(
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "-0", "1e-320", "0.1", "1.7976931348623157e308"]
    ),
    st.floats(allow_nan=False).map(repr),
)
floats4 = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "1e-45", "0.1", "3.4028235e38"]),
    st.floats(width=32, allow_nan=False).map(repr),
)
dates = st.one_of(
    st.sampled_from(
        ["infinity", "-infinity", "4713-01-01 BC", "5874897-12-31", "0001-01-01", "2000-02-29"]
    ),
    st.dates().map(lambda d: d.isoformat()),
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "infinity",
            "-infinity",
            "4713-01-01 00:00:00 BC",
            "294276-12-31 23:59:59.999999",
            "2000-01-01 00:00:00.000001",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat(sep=" ")),
)
zones = st.sampled_from(["+00", "-12", "+14", "+05:45", "-03:30", "+00:09:21"])
timestamptzs = st.one_of(
    st.sampled_from(
        [
            "infinity",
            "-infinity",
            "4713-01-01 00:00:00+00 BC",
            "294276-12-31 23:59:59.999999+00",
            "2026-03-29 02:30:00 Europe/Paris",
        ]
    ),
    st.tuples(st.datetimes(), zones).map(lambda p: p[0].isoformat(sep=" ") + p[1]),
)
times = st.one_of(st.sampled_from(["24:00:00", "00:00:00", "23:59:59.999999"]), st.times().map(str))
timetzs = st.one_of(
    st.sampled_from(["24:00:00+00", "00:00:00-15:59", "12:00:00+15:59"]),
    st.tuples(st.times(), zones).map(lambda p: str(p[0]) + p[1]),
)
intervals = st.one_of(
    st.sampled_from(
        [
            "1 day",
            "24 hours",
            "-1 years +2 mons -3 days +04:05:06.789",
            "178000000 years",
            "-00:00:00.000001",
            "P1Y2M3DT4H5M6S",
        ]
    ),
    st.tuples(
        st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-(10**11), 10**11)
    ).map(lambda p: f"{p[0]} mons {p[1]} days {p[2]} microseconds"),
)
bits = st.integers(1, 70).flatmap(lambda n: st.text(alphabet="01", min_size=n, max_size=n))
inets = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda p: f"{p[0]}/{p[1]}"),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(lambda p: f"{p[0]}/{p[1]}"),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        numeric.filter(lambda v: v not in ("NaN", "Infinity", "-Infinity")).map(Decimal),
        edgy_text.filter(lambda s: len(s) < 200),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(edgy_text.filter(lambda s: len(s) < 50), inner, max_size=3),
    ),
    max_leaves=6,
)


def json_text(value: Any) -> str:
    """JSON text with numbers exactly as drawn."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json_text(k)}:{json_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def array_text(items: list[str] | list[str | None]) -> str:
    quoted = [
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in items
    ]
    return "{" + ",".join(quoted) + "}"


def record_text(fields: tuple[str, ...]) -> str:
    """A composite value's text, every field quoted."""
    return (
        "(" + ",".join('"' + f.replace("\\", "\\\\").replace('"', '""') + '"' for f in fields) + ")"
    )


ENUM_LABELS = ["plain", "it's", 'say "hi"', "a,b", " spaced ", "\u00e9t\u00e9", "{}", "NULL"]


MOOD = (
    "CREATE TYPE {s}.mood AS ENUM ("
    + ", ".join("'" + label.replace("'", "''") + "'" for label in ENUM_LABELS)
    + ")"
)
# A composite whose fields have typmods (char(3) pads, numeric(12,4) rounds: the key's text is
# the padded, rounded value), a time zone (its text depends on TimeZone and, nested, DateStyle)
# and an enum; and an array of them.
RECORD = (
    "CREATE TYPE {s}.item AS (code char(3), amount numeric(12,4), at timestamptz, mood {s}.mood)"
)
record_values = st.tuples(
    st.text(alphabet=ODD, max_size=3),
    st.one_of(
        st.sampled_from(["NaN", "0", "-0.0001", "99999999.9999", "1.23456"]),
        st.decimals(min_value=-(10**7), max_value=10**7, places=4).map(str),
    ),
    timestamptzs,
    st.sampled_from(ENUM_LABELS),
).map(record_text)


@dataclass(frozen=True)
class KeyType:
    """A key column's type: how it is declared ({s}: the example's schema), what values it gets,
    what must exist first, and, for a type watch() refuses, words its error must say."""

    name: str
    declared: str
    values: St[str]
    setup: tuple[str, ...] = ()
    refused: str | None = None
    # False: two values cannot be compared (the type has parts without btree equality: a
    # table's unique index holds one row at most), so the type is only tried alone, one row.
    drawn: bool = True

    def sql(self, schema: str) -> str:
        return self.declared.replace("{s}", schema)


def holding_no_equality(
    name: str, declared: str, value: str, part: str, setup: tuple[str, ...] = ()
) -> KeyType:
    """A type holding `part`, a type without btree equality: watch() refuses it, and its one
    value is tried alone."""
    return KeyType(
        name,
        declared,
        st.just(value),
        setup=setup,
        refused=f"holding {part}, which has no default btree operator class",
        drawn=False,
    )


TYPES: dict[str, KeyType] = {
    **{name: KeyType(name, name, s.map(str)) for name, s in ints.items()},
    "numeric": KeyType("numeric", "numeric", numeric),
    "numeric(40,20)": KeyType(
        "numeric(40,20)",
        "numeric(40,20)",
        st.one_of(
            st.sampled_from(
                ["12345678901234567890.12345678901234567891", "-0.00000000000000000001"]
            ),
            st.decimals(min_value=-(10**19), max_value=10**19, places=20).map(str),
        ),
    ),
    "real": KeyType("real", "real", floats4),
    "double precision": KeyType("double precision", "double precision", floats),
    "text": KeyType("text", "text", edgy_text),
    "varchar(12)": KeyType("varchar(12)", "varchar(12)", st.text(alphabet=ODD, max_size=12)),
    "char(6)": KeyType(
        "char(6)",
        "char(6)",
        st.one_of(
            st.sampled_from(["a", "a ", "abcdef", "  x", "", "it's", "\u00e9\u00e9"]),
            st.text(alphabet=ODD, max_size=6),
        ),
    ),
    "char(1)": KeyType(
        "char(1)", "char(1)", st.text(alphabet="ab '\u00e9", min_size=1, max_size=1)
    ),
    "bit(8)": KeyType("bit(8)", "bit(8)", st.text(alphabet="01", min_size=8, max_size=8)),
    "varbit": KeyType("varbit", "varbit", bits),
    "uuid": KeyType(
        "uuid",
        "uuid",
        st.one_of(
            st.sampled_from([str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1))]),
            st.uuids().map(lambda u: str(u).upper()),
            st.uuids().map(lambda u: "{" + u.hex + "}"),
        ),
    ),
    "date": KeyType("date", "date", dates),
    "timestamp": KeyType("timestamp", "timestamp", timestamps),
    # Not the last microsecond: timestamp(0) rounds it up to a value Postgres stores but whose
    # text its own input refuses ("timestamp out of range"), so no key of it can travel as text.
    "timestamp(0)": KeyType(
        "timestamp(0)",
        "timestamp(0)",
        timestamps.filter(lambda v: not v.startswith("294276-12-31 23:59:59.")),
    ),
    "timestamptz": KeyType("timestamptz", "timestamptz", timestamptzs),
    "time": KeyType("time", "time", times),
    "timetz": KeyType("timetz", "timetz", timetzs),
    "interval": KeyType("interval", "interval", intervals),
    "boolean": KeyType("boolean", "boolean", st.sampled_from(["true", "false"])),
    "jsonb": KeyType("jsonb", "jsonb", json_values.map(json_text)),
    "integer[]": KeyType(
        "integer[]",
        "integer[]",
        st.lists(st.one_of(st.none(), ints["integer"].map(str)), max_size=4).map(array_text),
    ),
    "text[]": KeyType(
        "text[]",
        "text[]",
        st.lists(st.one_of(st.none(), edgy_text.filter(lambda s: len(s) < 100)), max_size=3).map(
            array_text
        ),
    ),
    "date[]": KeyType(
        "date[]",
        "date[]",
        st.lists(dates.filter(lambda d: "BC" not in d), max_size=3).map(array_text),
    ),
    "inet": KeyType("inet", "inet", inets),
    "money": KeyType("money", "money", st.sampled_from(["1.50", "-2", "0"]), refused="lc_monetary"),
    "money[]": KeyType(
        "money[]", "money[]", st.sampled_from(["{1.50}", "{}", "{-2,NULL}"]), refused="lc_monetary"
    ),
    "composite(money)": KeyType(
        "composite(money)",
        "{s}.priced",
        st.sampled_from(["(1,1.50)", "(2,)"]),
        setup=("CREATE TYPE {s}.priced AS (n integer, price money)",),
        refused="lc_monetary",
    ),
    "regclass": KeyType(
        "regclass",
        "regclass",
        st.sampled_from(["pg_class", "pg_catalog.pg_type", "pg_proc"]),
        refused="search_path",
    ),
    # Types without btree equality of their own but inside an array or a composite, whose
    # default btree operator classes exist (array_ops, record_ops) and fail on the first
    # comparison. (A key column of such a type itself needs a unique index of a non-default
    # operator class: test_a_key_type_without_default_btree_equality_is_refused below.)
    "point[]": holding_no_equality("point[]", "point[]", '{"(1,2)"}', "point"),
    "composite(point)": holding_no_equality(
        "composite(point)",
        "{s}.located",
        '(1,"(1,2)")',
        "point",
        setup=("CREATE TYPE {s}.located AS (n integer, at point)",),
    ),
    "composite(xml)": holding_no_equality(
        "composite(xml)",
        "{s}.marked",
        "(1,<a/>)",
        "xml",
        setup=("CREATE TYPE {s}.marked AS (n integer, doc xml)",),
    ),
    "bytea": KeyType("bytea", "bytea", st.binary(max_size=40).map(lambda b: "\\x" + b.hex())),
    "enum": KeyType("enum", "{s}.mood", st.sampled_from(ENUM_LABELS), setup=(MOOD,)),
    "domain(bigint)": KeyType(
        "domain(bigint)",
        "{s}.positive",
        st.integers(1, 2**63 - 1).map(str),
        setup=("CREATE DOMAIN {s}.positive AS bigint CHECK (VALUE > 0)",),
    ),
    "domain(char(4))": KeyType(
        "domain(char(4))",
        "{s}.code",
        st.text(alphabet="AB '", min_size=1, max_size=4).filter(lambda s: s.strip()),
        setup=("CREATE DOMAIN {s}.code AS char(4) CHECK (VALUE <> '')",),
    ),
    "domain(numeric)": KeyType(
        "domain(numeric)",
        "{s}.amount",
        numeric.filter(lambda v: v != "NaN"),
        setup=("CREATE DOMAIN {s}.amount AS numeric CHECK (VALUE <> 'NaN')",),
    ),
    "domain(timestamptz)": KeyType(
        "domain(timestamptz)",
        "{s}.moment",
        timestamptzs,
        setup=("CREATE DOMAIN {s}.moment AS timestamptz CHECK (VALUE IS NOT NULL)",),
    ),
    "composite": KeyType(
        "composite",
        "{s}.pair",
        st.tuples(
            ints["integer"].map(str),
            st.text(alphabet=ODD, max_size=8),
            st.sampled_from(["2000-01-01", "infinity", "1999-12-31 BC"]),
        ).map(record_text),
        setup=("CREATE TYPE {s}.pair AS (n integer, label text, day date)",),
    ),
    "composite(char,numeric,timestamptz,enum)": KeyType(
        "composite(char,numeric,timestamptz,enum)",
        "{s}.item",
        record_values,
        setup=(MOOD, RECORD),
    ),
    "composite(char,numeric,timestamptz,enum)[]": KeyType(
        "composite(char,numeric,timestamptz,enum)[]",
        "{s}.item[]",
        st.lists(st.one_of(st.none(), record_values), max_size=3).map(array_text),
        setup=(MOOD, RECORD),
    ),
    "int4range": KeyType(
        "int4range",
        "int4range",
        st.tuples(
            st.integers(-1000, 1000), st.integers(0, 50), st.sampled_from(["[)", "(]", "[]", "()"])
        ).map(lambda p: f"{p[2][0]}{p[0]},{p[0] + p[1]}{p[2][1]}"),
    ),
    "citext": KeyType(
        "citext", "citext", edgy_text, setup=("CREATE EXTENSION IF NOT EXISTS citext",)
    ),
}

# Settings of the application's session (its triggers run there) and of watch()'s.
APP_SETTINGS: list[dict[str, str]] = [
    {},
    {
        "DateStyle": "SQL, DMY",
        "IntervalStyle": "sql_standard",
        "extra_float_digits": "-15",
        "TimeZone": "Asia/Kathmandu",
        "bytea_output": "escape",
    },
    {
        "DateStyle": "German",
        "IntervalStyle": "iso_8601",
        "extra_float_digits": "0",
        "TimeZone": "America/St_Johns",
    },
    {
        "DateStyle": "Postgres, YMD",
        "IntervalStyle": "postgres_verbose",
        "TimeZone": "Pacific/Chatham",
    },
]

MODES = ("column", "chunked", "function", "side column", "side function")
SIDE_MODES = ("side column", "side function")


@dataclass
class Case:
    """One example: key column types, rows (one text value per key column, and whether the
    content function fails for it until cured), how the table is watched, the application's
    settings."""

    types: list[str]
    rows: list[tuple[tuple[str, ...], bool]]
    mode: str = "column"
    app: int = 0
    backfilled: int = 0  # how many of the rows are there before watch()

    def __repr__(self) -> str:
        return f"Case({self.types!r}, {self.rows!r}, mode={self.mode!r}, app={self.app}, backfilled={self.backfilled})"


@st.composite
def cases(draw: Callable[[St[Any]], Any], types: St[list[str]] | None = None) -> Case:
    drawn = sorted(n for n, k in TYPES.items() if k.drawn)
    names = draw(types or st.lists(st.sampled_from(drawn), min_size=1, max_size=3))
    row = st.tuples(st.tuples(*(TYPES[n].values for n in names)), st.booleans())
    rows = draw(st.lists(row, min_size=1, max_size=6))
    return Case(
        types=names,
        rows=rows,
        mode=draw(st.sampled_from(MODES)),
        app=draw(st.integers(0, len(APP_SETTINGS) - 1)),
        backfilled=draw(st.integers(0, len(rows))),
    )


def every_type_alone() -> Iterator[Case]:
    """Explicit examples: each type alone, with its edge values, in every mode; whatever the
    random examples draw, each type is tried, in a row store and in a side table."""
    modes = itertools.cycle(m for m in MODES if m not in SIDE_MODES)
    side_modes = itertools.cycle(SIDE_MODES)
    for i, name in enumerate(sorted(TYPES)):
        rows: list[tuple[tuple[str, ...], bool]] = [
            ((v,), j % 3 == 0) for j, v in enumerate(EDGES[name])
        ]
        for mode in (next(modes), next(side_modes)):
            yield Case(
                [name], rows, mode=mode, app=i % len(APP_SETTINGS), backfilled=len(rows) // 2
            )


EDGES: dict[str, list[str]] = {
    "smallint": ["-32768", "32767", "0"],
    "integer": ["-2147483648", "2147483647"],
    "bigint": ["-9223372036854775808", "9223372036854775807", "9007199254740993"],
    "numeric": [
        "NaN",
        "Infinity",
        "-Infinity",
        "-0",
        "123456789012345678901234567890.123456789012345678901",
        "9007199254740993",
        "1e-30",
    ],
    "numeric(40,20)": ["12345678901234567890.12345678901234567891", "-0.00000000000000000001"],
    "real": ["NaN", "Infinity", "-Infinity", "-0", "1e-45", "0.1", "3.4028235e38"],
    "double precision": [
        "NaN",
        "Infinity",
        "-Infinity",
        "-0",
        "5e-324",
        "0.1",
        "1.7976931348623157e308",
    ],
    "text": ["", " ", "a ", 'it\'s "q" \\ {}', "\u00e9\U0001f600\u2028", "x" * 2000],
    "varchar(12)": ["", "twelve chars", "a\tb\nc"],
    "char(6)": ["a", "abcdef", "  x", "it's", ""],
    "char(1)": ["a", " ", "'"],
    "bit(8)": ["00000000", "10101010", "11111111"],
    "varbit": ["", "1", "0" * 70],
    "uuid": [str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1)).upper()],
    "date": ["infinity", "-infinity", "4713-01-01 BC", "5874897-12-31", "2000-02-29"],
    "timestamp": [
        "infinity",
        "-infinity",
        "4713-01-01 00:00:00 BC",
        "294276-12-31 23:59:59.999999",
        "2000-01-01 00:00:00.000001",
    ],
    "timestamp(0)": ["2000-01-01 00:00:01", "infinity"],
    "timestamptz": [
        "infinity",
        "-infinity",
        "4713-01-01 00:00:00+00 BC",
        "294276-12-31 23:59:59.999999+00",
        "2026-03-29 02:30:00+05:45",
        "1900-01-01 00:00:00+00:09:21",
    ],
    "time": ["24:00:00", "00:00:00", "23:59:59.999999"],
    "timetz": ["24:00:00+00", "00:00:00-15:59", "12:00:00+15:59"],
    "interval": [
        "1 day",
        "-1 years +2 mons -3 days +04:05:06.789",
        "178000000 years",
        "-00:00:00.000001",
    ],
    "boolean": ["true", "false"],
    "jsonb": [
        '{"a": 1, "b": [true, null]}',
        "12345678901234567890.123456789012345678901",
        '"s"',
        "null",
        "[]",
        '{"q\\"": "\\u00e9"}',
    ],
    "integer[]": ["{}", "{1,NULL,-3}", "{{1,2},{3,4}}"],
    "text[]": ["{}", '{"a,b","NULL",NULL,"\\\\"}', '{""}'],
    "date[]": ["{2000-01-02,infinity}", "{}"],
    "inet": ["10.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"],
    "money": ["1.50"],
    "money[]": ["{1.50}"],
    "composite(money)": ["(1,1.50)"],
    "regclass": ["pg_class"],
    "point[]": ['{"(1,2)"}'],
    "composite(point)": ['(1,"(1,2)")'],
    "composite(xml)": ["(1,<a/>)"],
    "bytea": ["\\x", "\\x00ff", "\\x5c27"],
    "enum": ENUM_LABELS,
    "domain(bigint)": ["1", "9223372036854775807"],
    "domain(char(4))": ["A", "AB A"],
    "domain(numeric)": ["Infinity", "123456789012345678901234567890.123456789012345678901", "-0"],
    "domain(timestamptz)": ["infinity", "2026-01-02 03:04:05.678+05:45"],
    "composite": [
        '(1,"a b",2000-01-01)',
        '(-2,"it\'s ""q"" \\\\",infinity)',
        '(0,"",1999-12-31 BC)',
    ],
    "composite(char,numeric,timestamptz,enum)": [
        "(a,1.5,infinity,plain)",
        '("",NaN,"4713-01-01 00:00:00+00 BC","it\'s")',
        '("ab ",-99999999.9999,"2026-03-29 02:30:00+05:45","say ""hi""")',
        "(,,,)",
        '("\u00e9\u00e9\u00e9",0.00001,"1900-01-01 00:00:00+00:09:21"," spaced ")',
    ],
    "composite(char,numeric,timestamptz,enum)[]": [
        "{}",
        '{"(a,1.5,infinity,plain)",NULL,"(,,,)"}',
        '{"(\\"x,\\",2,\\"2000-01-01 00:00:00+14\\",\\"a,b\\")"}',
    ],
    "int4range": ["empty", "[1,2)", "(,5]", "[3,)"],
    "citext": ["Abc", "\u00c9t\u00e9", "x" * 1500],
}


# --- one example --------------------------------------------------------------------------------
@dataclass
class Harness:
    """What every example shares: one database, the worker, the model."""

    dsn: str
    conn: Conn
    run: Callable[..., Worker]
    model: str
    citext: bool = True  # whether the cluster has the citext extension
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def app(self, settings: dict[str, str]) -> Conn:
        conn = psycopg.connect(self.dsn, autocommit=True)
        for name, value in settings.items():
            conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        return conn

    def check(self, case: Case) -> None:
        schema = f"k{next(self.counter)}"
        self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            with self.app(APP_SETTINGS[case.app]) as app:
                self._check(app, schema, case)
        finally:
            self.conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            clear_queue(self.conn)
            self.conn.execute("DELETE FROM embeddings.failures")

    def _check(self, app: Conn, schema: str, case: Case) -> None:
        kinds = [TYPES[n] for n in case.types]
        for statement in dict.fromkeys(s for k in kinds for s in k.setup):
            app.execute(statement.replace("{s}", schema))
        columns = [f"k{i}" for i in range(len(kinds))]
        table = f"{schema}.docs"
        app.execute(
            f"CREATE TABLE {table} ("
            + ", ".join(f"{c} {k.sql(schema)}" for c, k in zip(columns, kinds, strict=True))
            + f", body text, PRIMARY KEY ({', '.join(columns)}))"
        )
        app.execute(f"CREATE TABLE {schema}.cursed (on_ boolean)")
        app.execute("INSERT INTO " + schema + ".cursed VALUES (true)")
        app.execute(
            f"CREATE FUNCTION {schema}.content(d {table}) RETURNS text LANGUAGE plpgsql STABLE AS $$"
            f" BEGIN IF d.body LIKE 'poison%' AND EXISTS (SELECT FROM {schema}.cursed) THEN"
            " RAISE EXCEPTION 'poisoned row'; END IF; RETURN d.body; END $$"
        )
        insert = sql.SQL("INSERT INTO {} VALUES ({}, %s) ON CONFLICT DO NOTHING").format(
            sql.SQL(table),
            sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(k.sql(schema))) for k in kinds),
        )
        by_function = case.mode in ("function", "side function")
        poisoned = by_function

        def body(i: int, poison: bool) -> str:
            return (
                ("poison " if poison and poisoned else "")
                + f"text of row {i}"
                + " word" * (i % 3) * 20
            )

        inserted = 0
        for i, (values, poison) in enumerate(case.rows[: case.backfilled]):
            inserted += app.execute(insert, (*values, body(i, poison))).rowcount
        refusal = next((k.refused for k in kinds if k.refused), None)
        watch = sql.SQL("SELECT embeddings.watch({}, {}, model => {}{})").format(
            sql.Literal(table),
            sql.Literal(f"{schema}.content" if by_function else "body"),
            sql.Literal(self.model),
            sql.SQL(
                ", chunk_tokens => 16"
                if case.mode == "chunked"
                else ", store => 'side'"
                if case.mode in SIDE_MODES
                else ""
            ),
        )
        if refusal is not None:
            with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
                app.execute(watch)
            column = next(c for c, k in zip(columns, kinds, strict=True) if k.refused)
            message = str(refused.value)
            assert column in message and refusal in message, message
            return
        app.execute(watch)
        for i, (values, poison) in enumerate(case.rows[case.backfilled :], start=case.backfilled):
            inserted += app.execute(insert, (*values, body(i, poison))).rowcount
        rows = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert rows == (inserted,)

        self.run(max_attempts=1)
        cursed = self.count(f"{table} d WHERE d.body LIKE 'poison%'")
        failed = self.count("embeddings.failures")
        assert failed == cursed, self.failures()
        if cursed:
            # Dead letters list their keys, and `failures --retry` re-queues them as they were.
            assert cli.main(["failures", "--json", "--database-url", self.dsn]) == 0
            self.conn.execute(f"DELETE FROM {schema}.cursed")
            assert cli.main(["failures", "--retry", "--database-url", self.dsn]) == 0
            self.run()
        self.assert_all_embedded(table, columns, case)
        # The update trigger matches old and new rows by key: every row is queued again.
        app.execute(f"UPDATE {table} SET body = body || ' (edited)'")
        self.run()
        self.assert_all_embedded(table, columns, case, suffix=" (edited)")
        self.assert_verified_elsewhere(table, case)

    def assert_verified_elsewhere(self, table: str, case: Case) -> None:
        """A verifying pass from a session with other settings than the application's and the
        worker's finds every vector current: each key has one text, whoever writes it (the
        triggers, the worker's fingerprints, the sweep), and no fingerprint is pruned."""
        other = APP_SETTINGS[(case.app + 1) % len(APP_SETTINGS)] or APP_SETTINGS[1]
        target = self.conn.execute(
            "SELECT id FROM embeddings.targets WHERE source = %s::regclass", (table,)
        ).fetchone()
        assert target is not None
        with self.app(other) as sweeper:
            queued = sweeper.execute(
                "SELECT embeddings.sweep(max_rows => 1000, verify => true)"
            ).fetchone()
        assert queued == (0,), self.conn.execute(
            "SELECT message FROM pgmq.q_embedding_jobs_backfill"
        ).fetchall()
        fingerprints = self.count(f"embeddings.fingerprints WHERE target_id = {target[0]}")
        assert fingerprints == self.count(table)

    def count(self, relation: str) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {relation}").fetchone()
        assert row is not None
        return int(row[0])

    def failures(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT row_key::text, last_error FROM embeddings.failures"
        ).fetchall()

    def assert_all_embedded(
        self, table: str, columns: list[str], case: Case, suffix: str = ""
    ) -> None:
        assert self.failures() == []
        assert self.count(JOBS) == 0
        # A chunk or side table's key columns are the source's, typmods and collations included.
        types = (
            "SELECT attname, format_type(atttypid, atttypmod), attcollation FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = ANY(%s) ORDER BY attname"
        )
        same = " AND ".join(f"c.{c} = d.{c}" for c in columns)
        store = table + ("_embeddings" if case.mode in SIDE_MODES else "_chunks")
        if case.mode in SIDE_MODES or case.mode == "chunked":
            assert (
                self.conn.execute(types, (store, columns)).fetchall()
                == self.conn.execute(types, (table, columns)).fetchall()
            )
        if case.mode in SIDE_MODES:
            # Every row has its side row, holding the vector of the row's content as it is now;
            # and no side row is left over (an UPDATE of every row keeps every key).
            missing = self.conn.execute(
                f"SELECT d.body FROM {table} d WHERE NOT EXISTS (SELECT FROM {store} c WHERE {same}"
                " AND c.embedding IS NOT NULL AND c.content_md5 = md5(d.body))"
            ).fetchall()
            assert self.count(store) == self.count(table)
        elif case.mode == "chunked":
            # Every document has chunks, and its last one ends as the document does now.
            missing = self.conn.execute(
                f"SELECT d.body FROM {table} d WHERE NOT EXISTS (SELECT FROM {store} c WHERE {same}"
                f" AND right(d.body, 9) = right(c.chunk, 9))"
            ).fetchall()
        else:
            missing = self.conn.execute(
                f"SELECT body FROM {table} WHERE embedding IS NULL"
            ).fetchall()
        assert missing == [], f"rows never embedded ({len(missing)} of {self.count(table)})"


@pytest.fixture
def harness(
    dsn: str, conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> Harness:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
        citext = True
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile):  # not installed
        citext = False
    return Harness(dsn, conn, run_once, tiny_models[0], citext=citext)


PROPERTY = hypothesis_run(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
    max_examples=int(os.environ.get("KEY_TYPE_EXAMPLES", "20")),
)


@pytest.mark.parametrize(
    "case", list(every_type_alone()), ids=lambda c: f"{c.types[0]}-{c.mode.replace(' ', '-')}"
)
def test_each_key_type_alone(harness: Harness, case: Case) -> None:
    if "citext" in case.types and not harness.citext:
        pytest.skip("the citext extension is not available on the test cluster")
    harness.check(case)


@PROPERTY
@given(case=cases())
def test_every_key_type_round_trips_or_is_refused(harness: Harness, case: Case) -> None:
    assume(harness.citext or "citext" not in case.types)
    harness.check(case)


# A btree operator class for `ty` that is not its default (comparing the values' text), in
# schema `opc`: the only way to give a type without btree equality a unique index, so that
# watch(key => ...) gets as far as looking at the key's type. (Only a superuser can make one.)
OPERATOR_CLASS = [
    "CREATE SCHEMA opc",
    "CREATE FUNCTION opc.cmp(a {ty}, b {ty}) RETURNS integer LANGUAGE sql IMMUTABLE"
    " AS 'SELECT pg_catalog.bttextcmp(a::text, b::text)'",
    *(
        f"CREATE FUNCTION opc.{name}(a {{ty}}, b {{ty}}) RETURNS boolean LANGUAGE sql IMMUTABLE"
        f" AS 'SELECT opc.cmp(a, b) {op} 0'"
        for name, op in (("lt", "<"), ("le", "<="), ("eq", "="), ("ge", ">="), ("gt", ">"))
    ),
    *(
        f"CREATE OPERATOR opc.{op} (LEFTARG = {{ty}}, RIGHTARG = {{ty}}, FUNCTION = opc.{name})"
        for name, op in (("lt", "<"), ("le", "<="), ("eq", "="), ("ge", ">="), ("gt", ">"))
    ),
    "CREATE OPERATOR CLASS opc.text_order FOR TYPE {ty} USING btree AS OPERATOR 1 opc.<,"
    " OPERATOR 2 opc.<=, OPERATOR 3 opc.=, OPERATOR 4 opc.>=, OPERATOR 5 opc.>,"
    " FUNCTION 1 opc.cmp({ty}, {ty})",
]


@pytest.mark.parametrize(
    ("ty", "value"), [("json", '{"a": 1}'), ("xml", "<a/>"), ("point", "(1,2)")]
)
def test_a_key_type_without_default_btree_equality_is_refused(
    conn: Conn, ty: str, value: str
) -> None:
    """json and point have no btree operator class at all; xml is binary-coercible to text, but
    only in assignment, so text's class is not its default: its `=` cannot compare two xml
    values."""
    for statement in OPERATOR_CLASS:
        conn.execute(statement.replace("{ty}", ty))
    conn.execute(f"CREATE TABLE public.odd (k {ty} NOT NULL, body text)")
    conn.execute("CREATE UNIQUE INDEX ON public.odd (k opc.text_order)")
    conn.execute("INSERT INTO public.odd VALUES (%s, 'one row')", (value,))
    with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        conn.execute("SELECT embeddings.watch('public.odd', 'body', key => ARRAY['k'])")
    message = str(refused.value)
    assert f"key column public.odd.k has type {ty}, which has no default btree operator class" in (
        message
    ), message


@pytest.mark.parametrize("types", [["real"], ["double precision"], ["bigint", "real"]])
def test_float_keys_backfilled_from_a_session_that_rounds_floats(
    harness: Harness, types: list[str]
) -> None:
    """watch() in a session with extra_float_digits below 1 (it rounds floats' text) scans the
    existing rows there: their keys must still match their rows."""
    values = {"real": "0.25", "double precision": "0.1", "bigint": "7"}
    rows: list[tuple[tuple[str, ...], bool]] = [(tuple(values[t] for t in types), False)]
    harness.check(Case(types, rows, mode="column", app=1, backfilled=1))


@pytest.mark.soak
@hypothesis_run(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    max_examples=int(os.environ.get("KEY_TYPE_EXAMPLES", "300")),
)
@given(case=cases())
def test_every_key_type_round_trips_or_is_refused_soak(harness: Harness, case: Case) -> None:
    assume(harness.citext or "citext" not in case.types)
    harness.check(case)


def test_every_type_has_edge_values() -> None:
    assert set(EDGES) == set(TYPES)
