"""A tenant's text shown, not obeyed, wherever it meets a terminal (worker/escapes.py): the
escapes themselves, and /metrics' label values (the CLI's tables: test_cli_output.py; log
lines: test_logs.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from psycopg import sql

from worker import escapes, exceptions, metrics
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.models.remote.spec import RemoteSpec

# A tenant's table name, content or error: an escape sequence that clears the screen and sets the
# window's title, a C1 control sequence introducer, a right-to-left override, a tab.
HOSTILE = "docs\x1b[2J\x1b]0;owned\x07\x9b31m\u202etxt.exe\tend"


def test_what_a_terminal_would_act_on_is_shown_as_escapes() -> None:
    shown = escapes.visible(HOSTILE)
    assert shown == "docs\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202etxt.exe\\tend"
    assert shown.isprintable()
    assert escapes.visible("plain, é, 漢字, a \\ backslash") == "plain, é, 漢字, a \\ backslash"
    assert escapes.visible(shown) == shown  # shown twice, the same


def test_a_tenants_target_name_in_metrics_is_shown_not_obeyed() -> None:
    """`curl /metrics` prints label values as they are but for a backslash, a quote and a
    newline: a table named with an escape sequence would reach the operator's terminal raw."""
    name = "public." + HOSTILE
    metrics.count_row(name, "written")
    metrics.target_deferred(name, deferred=True)
    metrics.target_stopped(name, "problem", stopped=True)
    exposed = generate_latest(metrics.REGISTRY).decode()
    assert all(line.isprintable() for line in exposed.splitlines())
    shown = escapes.label(name).replace("\\", "\\\\")  # the text format's own escape
    for series in (
        f'embed_worker_rows_total{{outcome="embedded",target="{shown}"}}',
        f'embed_worker_target_deferred{{target="{shown}"}} 1.0',
        f'embed_worker_target_stopped{{state="problem",target="{shown}"}} 1.0',
    ):
        assert any(line.startswith(series) for line in exposed.splitlines()), series
    metrics.target_stopped(name, "problem", stopped=False)  # the same series, cleared
    assert f'embed_worker_target_stopped{{state="problem",target="{shown}"}} 0.0' in (
        generate_latest(metrics.REGISTRY).decode()
    )


def test_two_tables_never_share_a_target_label() -> None:
    """A name holding a backslash is not shown as another name's escape: `t` + ESC and the
    five characters `t\\x1b` (both legal table names) get a series each."""
    escaped, literal = "public.t\x1b", "public.t\\x1b"
    assert escapes.visible(escaped) == escapes.visible(literal)  # shown alike to a human
    assert escapes.label(escaped) == "public.t\\x1b"
    assert escapes.label(literal) == "public.t\\\\x1b"
    assert escapes.label("public.docs") == "public.docs"
    metrics.count_row(escaped, "written")
    metrics.count_row(literal, "written")
    metrics.count_row(literal, "written")
    counts = {
        labels["target"]: value
        for family in metrics.REGISTRY.collect()
        if family.name == "embed_worker_rows"
        for name, labels, value, *_ in family.samples
        if name == "embed_worker_rows_total" and labels["target"].startswith("public.t\\")
    }
    assert counts == {"public.t\\x1b": 1.0, "public.t\\\\x1b": 2.0}


def test_a_shown_literal_is_the_text_itself_when_run() -> None:
    """A fix we print quotes what a tenant named: a quote ends nothing, a backslash is kept."""
    assert escapes.shown_literal("public.docs") == "'public.docs'"
    assert escapes.shown_literal("x'); DROP TABLE t; --") == "'x''); DROP TABLE t; --'"
    assert escapes.shown_literal("a\\b") == "E'a\\\\b'"


# What a name in the database may hold: no NUL, no lone surrogate (text there is UTF-8).
@given(st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\x00")))
def test_a_shown_literal_is_written_as_psycopg_writes_one(text: str) -> None:
    """The models' side may not import psycopg, so the literal is written by hand: the same
    bytes as psycopg's sql.Literal, which the database reads back as `text` (the integration
    tests run printed fixes: test_worker.py)."""
    assert escapes.shown_literal(text) == sql.Literal(text).as_string(None).strip()


def test_a_remote_models_tokenizer_hint_quotes_its_name() -> None:
    """A registered model's name is any text: the register_model() call the hint prints takes
    it as one literal, so a quote in it ends nothing."""
    name = "m', 8); DROP TABLE keep; --"
    spec = RemoteSpec.from_row(
        {
            "name": name,
            "provider": "openai",
            "endpoint": "https://api.example.com/v1",
            "remote_model": "test-model",
            "dimensions": 8,
            "max_tokens": 512,
        }
    )
    settings = Settings.from_env()
    models = LoadedModels(
        location=settings.model_location, downloads=settings.downloads, api_key=settings.api_key
    )
    models.follow(lambda: {name: spec})
    with pytest.raises(exceptions.ModelError) as raised:
        models.tokenizer(name)
    assert "register_model('m'', 8); DROP TABLE keep; --', ..., tokenizer" in str(raised.value)
