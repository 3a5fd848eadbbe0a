"""The Supabase "Automatic embeddings" guide's push side, as the guide writes it: its
util.invoke_edge_function() (pg_net's net.http_post to an Edge Function) and
util.process_embeddings() (pgmq.read, then one post per batch), with a stand-in of Supabase's
Vault (vault.create_secret(), vault.decrypted_secrets) where the server has none. Then
`repointed()` applies what docs/supabase.md tells a user to run on top of it: the SQL blocks
that replace a function of schema util."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from tests.support.cluster import REPO

Conn = psycopg.Connection[Any]

DOC = REPO / "docs" / "supabase.md"
DOC_WORKER = "http://worker.internal:8080"  # the worker's address in the doc's blocks
_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)

GUIDE = """
CREATE SCHEMA IF NOT EXISTS util;

CREATE FUNCTION util.project_url() RETURNS text LANGUAGE sql AS $$ SELECT PROJECT_URL::text $$;

CREATE OR REPLACE FUNCTION util.invoke_edge_function(
  name text, body jsonb, timeout_milliseconds int = 5 * 60 * 1000
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  headers_raw text;
  auth_header text;
BEGIN
  headers_raw := current_setting('request.headers', true);
  auth_header := CASE WHEN headers_raw IS NOT NULL THEN (headers_raw::json->>'authorization') ELSE NULL END;
  PERFORM net.http_post(
    url => util.project_url() || '/functions/v1/' || name,
    headers => jsonb_build_object('Content-Type', 'application/json', 'Authorization', auth_header),
    body => body,
    timeout_milliseconds => timeout_milliseconds);
END;
$fn$;

CREATE OR REPLACE FUNCTION util.process_embeddings(
  batch_size int = 10, max_requests int = 10, timeout_milliseconds int = 5 * 60 * 1000
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  job_batches jsonb[];
  batch jsonb;
BEGIN
  WITH numbered_jobs AS (
    SELECT message || jsonb_build_object('jobId', msg_id) AS job_info,
           (row_number() OVER (ORDER BY 1) - 1) / batch_size AS batch_num
    FROM pgmq.read(queue_name => 'embedding_jobs', vt => timeout_milliseconds / 1000,
                   qty => max_requests * batch_size)
  ),
  batched_jobs AS (
    SELECT jsonb_agg(job_info) AS batch_array, batch_num FROM numbered_jobs GROUP BY batch_num
  )
  SELECT array_agg(batch_array) FROM batched_jobs INTO job_batches;
  FOREACH batch IN ARRAY coalesce(job_batches, '{}') LOOP
    PERFORM util.invoke_edge_function(name => 'embed', body => batch,
                                      timeout_milliseconds => timeout_milliseconds);
  END LOOP;
END;
$fn$;
"""

VAULT = """
CREATE SCHEMA vault;
CREATE TABLE vault.secrets (name text PRIMARY KEY, secret text NOT NULL);
CREATE FUNCTION vault.create_secret(new_secret text, new_name text) RETURNS void LANGUAGE sql
AS $$ INSERT INTO vault.secrets VALUES (new_name, new_secret) $$;
CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;
"""


def install(conn: Conn, worker: str) -> None:
    """The guide's functions, posting to `worker` (scheme, host and port)."""
    if conn.execute("SELECT to_regnamespace('vault')").fetchone() == (None,):
        conn.execute(VAULT)
    conn.execute(GUIDE.replace("PROJECT_URL", sql.Literal(worker).as_string(conn)))


def repointed(conn: Conn, worker: str) -> list[str]:
    """Runs docs/supabase.md's SQL blocks that replace a function of schema util, the doc's
    worker address made `worker`; returns them."""
    blocks = [
        block.replace(DOC_WORKER, worker)
        for block in _BLOCK.findall(DOC.read_text())
        if re.search(r"CREATE OR REPLACE FUNCTION util\.", block)
    ]
    assert blocks, f"{DOC} has no SQL block that replaces a function of schema util"
    for block in blocks:
        conn.execute(block)
    return blocks
