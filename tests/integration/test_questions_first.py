"""A backlog drained by the worker while questions come to the same model in the same process
(worker/models/priority.py): the backlog's inference calls wait for the questions' and are
cut short while they come, and every row ends embedded once, with the vector it gets alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg

from tests.support import stores
from tests.support.jobs import messages
from worker.models.embedder import Embedder
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker

ROWS = 300


def test_a_backlog_yielding_to_questions_loses_and_repeats_no_row(
    conn: psycopg.Connection[Any],
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
) -> None:
    texts = {i: f"row {i}: " + " ".join(["backlog", "words"] * (5 + i % 40)) for i in range(ROWS)}
    stores.texts_table(conn, texts, "id int PRIMARY KEY, body text, embedded int DEFAULT 0")
    # Counts each store of a vector: a row embedded twice would say 2.
    conn.execute(
        "CREATE FUNCTION count_embedded() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN NEW.embedded := OLD.embedded + 1; RETURN NEW; END$$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute(
        "CREATE TRIGGER count_embedded BEFORE UPDATE OF embedding ON docs FOR EACH ROW"
        " WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION count_embedded()"
    )
    model = embedders.get(minilm)
    assert isinstance(model, Embedder)
    yielded = model.turns.yielded
    drained = threading.Event()

    def drain() -> None:
        try:
            run_once(batch_size=64)
        finally:
            drained.set()

    thread = threading.Thread(target=drain)
    thread.start()
    asked = 0
    while not drained.wait(0.02):  # a question every 20 ms or so, on this thread
        model.embed([f"question {asked} about backlog words"])
        asked += 1
    thread.join(60)

    assert model.turns.yielded > yielded  # backlog calls waited for questions' calls
    assert messages(conn) == []
    rows = conn.execute("SELECT id, embedding::real[], embedded FROM docs ORDER BY id").fetchall()
    assert [r[2] for r in rows] == [1] * ROWS  # each row stored once
    alone = model.embed(list(texts.values()))
    for (key, vector, _), expected in zip(rows, alone, strict=True):
        found = np.array(vector, dtype=np.float32)
        assert float(found @ expected / np.linalg.norm(found)) >= 0.999, key
