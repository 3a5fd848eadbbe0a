"""A replay of Supabase's "Automatic embeddings" guide with our worker in place of the Edge
Function: the guide's own util functions, content function, per-row triggers, clear_column
trigger, halfvec(384) column and HNSW index; we only add embeddings.watch(triggers => false)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.jobs import messages
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

GUIDE_SETUP = r"""
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE SCHEMA util;

CREATE FUNCTION util.clear_column() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    clear_column text := TG_ARGV[0];
BEGIN
    NEW := NEW #= hstore(clear_column, NULL);
    RETURN NEW;
END;
$$;

CREATE FUNCTION util.queue_embeddings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  content_function text = TG_ARGV[0];
  embedding_column text = TG_ARGV[1];
BEGIN
  PERFORM pgmq.send(
    queue_name => 'embedding_jobs',
    msg => jsonb_build_object(
      'id', NEW.id,
      'schema', TG_TABLE_SCHEMA,
      'table', TG_TABLE_NAME,
      'contentFunction', content_function,
      'embeddingColumn', embedding_column
    )
  );
  RETURN NEW;
END;
$$;

CREATE TABLE documents (
  id integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
  title text NOT NULL,
  content text NOT NULL,
  embedding halfvec(384),
  created_at timestamp with time zone DEFAULT now()
);
CREATE INDEX ON documents USING hnsw (embedding halfvec_cosine_ops);

CREATE FUNCTION embedding_input(doc documents) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN '# ' || doc.title || E'\n\n' || doc.content;
END;
$$;

CREATE TRIGGER embed_documents_on_insert AFTER INSERT ON documents
  FOR EACH ROW EXECUTE FUNCTION util.queue_embeddings('embedding_input', 'embedding');
CREATE TRIGGER embed_documents_on_update AFTER UPDATE OF title, content ON documents
  FOR EACH ROW EXECUTE FUNCTION util.queue_embeddings('embedding_input', 'embedding');
CREATE TRIGGER clear_document_embedding_on_update BEFORE UPDATE OF title, content ON documents
  FOR EACH ROW EXECUTE FUNCTION util.clear_column('embedding');
"""


def embedding_of(conn: Conn, title: str) -> np.ndarray[Any, Any] | None:
    row = conn.execute(
        "SELECT embedding::real[] FROM documents WHERE title = %s", (title,)
    ).fetchone()
    assert row is not None
    return None if row[0] is None else np.array(row[0], dtype=np.float32)


def test_the_guides_setup_is_served_by_the_worker(
    conn: Conn, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    conn.execute(GUIDE_SETUP)
    # Register the table; its jobs keep coming from the guide's own triggers.
    conn.execute(
        "SELECT embeddings.watch('documents', 'embedding_input', model => %s, triggers => false)",
        (minilm,),
    )

    conn.execute(
        "INSERT INTO documents (title, content) VALUES"
        " ('Understanding Vector Databases', 'Vector databases are specialized...')"
    )
    assert [m["table"] for m in messages(conn)] == ["documents"]  # the guide's message shape
    run_once()
    model = embedders.get(minilm)

    def assert_embedded_as(content: str) -> None:
        """The guide's row holds the vector of its embedding_input(): "# title\n\ncontent"."""
        stored = embedding_of(conn, "Understanding Vector Databases")
        assert stored is not None
        expected = model.embed([f"# Understanding Vector Databases\n\n{content}"])[0]
        assert float(stored @ expected) == pytest.approx(1.0, abs=1e-3)

    assert_embedded_as("Vector databases are specialized...")

    conn.execute(
        "UPDATE documents SET content = 'Vector databases allow you to query...'"
        " WHERE title = 'Understanding Vector Databases'"
    )
    assert embedding_of(conn, "Understanding Vector Databases") is None  # the guide's clear_column
    run_once()
    assert_embedded_as("Vector databases allow you to query...")

    conn.execute(
        "UPDATE documents SET title = 'Understanding Vector Databases with Supabase'"
        " WHERE title = 'Understanding Vector Databases'"
    )
    run_once()
    assert embedding_of(conn, "Understanding Vector Databases with Supabase") is not None
    assert messages(conn) == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    status = conn.execute(
        "SELECT target, total_rows, embedded_rows, pending_jobs FROM embeddings.status"
    ).fetchone()
    assert status == ("public.documents.embedding", 1, 1, 0)
