"""A model change's steps and the target's definition digest (QA foreign, finding 2): starting,
cancelling and completing a change gave the target a new version without taking its digest
again, so the first schema change that changes nothing a batch depends on (a statistics target)
found the digest stale and gave yet another version, handing back the batches in flight."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import stores

Conn = psycopg.Connection[Any]

STEPS = ("started", "cancelled", "completed")


def version_and_digest(conn: Conn) -> tuple[int, bool]:
    row = conn.execute(
        "SELECT version, definition_digest = embeddings_internal.definition_digest(t)"
        " FROM embeddings.targets t WHERE source = 'docs'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("store", stores.STORES)
def test_a_statistics_target_after_a_model_change_step_keeps_the_version(
    conn: Conn, tiny_models: tuple[str, str], store: str, step: str
) -> None:
    old, new = tiny_models
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    target = stores.watch(conn, store, old)
    stores.watch(conn, store, new)  # the change starts
    if step == "cancelled":
        assert conn.execute("SELECT embeddings.cancel_change('docs')").fetchone() == (True,)
    elif step == "completed":
        done = conn.execute("SELECT embeddings_internal.complete_change(%s)", (target,))
        assert done.fetchone() == ("done",)
    version, current = version_and_digest(conn)
    assert current, f"the digest was not taken again when the change was {step}"

    conn.execute("ALTER TABLE docs ALTER COLUMN body SET STATISTICS 500")

    assert version_and_digest(conn) == (version, True)
