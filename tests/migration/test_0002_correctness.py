"""Revision 0002 on a database that has lived under 0001: worker roles keep working, with the
narrower row-security policies, and targets start at definition version 1."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from tests.support.cluster import Cluster
from worker import schema


def test_upgrading_replaces_for_all_worker_policies_and_grants_the_version_lock(
    cluster: Cluster,
) -> None:
    name = cluster.create_database(prefix="at0001")
    dsn = cluster.dsn(name)
    role = f"embed_worker_{uuid.uuid4().hex[:8]}"
    try:
        schema.migrate(dsn, "0001")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
            conn.execute("SELECT embeddings.watch('notes', 'body')")
            conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
            commands = "SELECT string_agg(polcmd::text, '' ORDER BY polcmd) FROM pg_policy WHERE polrelid = 'notes'::regclass"
            assert conn.execute(commands).fetchone() == ("*",)

        schema.migrate(dsn)

        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute(commands).fetchone() == ("rw",)
            assert conn.execute("SELECT version FROM embeddings.targets").fetchone() == (1,)
        with psycopg.connect(make_conninfo(dsn, user=role)) as worker_conn:
            row = worker_conn.execute(
                "SELECT embeddings.lock_target_version(id) FROM embeddings.targets"
            ).fetchone()
            assert row == (1,)
    finally:
        cluster.drop_database(name)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
