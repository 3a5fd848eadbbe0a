"""Hostile waits on the deferred index builds: what a tenant that may write its own table can
hold up of another tenant's index (docs/reliability.md, "Bounded waits").

A worker builds one deferred index at a time, CONCURRENTLY, and such a build waits for what its
table's users hold: the table in a mode that conflicts with its SHARE UPDATE EXCLUSIVE, and the
transactions writing the table. One real `embed-worker` process, as a role that may build both
tenants' indexes (a member of the role owning their tables), with its default bounds: the hostile
tenant holds its table before its index's build starts and for as long as the test lasts; the
other tenant's table becomes ready meanwhile, and its index is built within OTHERS_SECONDS (the
builder's TABLE_WAIT_SECONDS, a look every second, then a build of a few rows); the hostile
tenant's index is built once it lets go.

A new wait is one entry in HOLDS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.cluster import Cluster
from tests.support.deferred_indexes import (
    build_waits,
    deferred_count,
    deferred_index_name,
    deferred_table,
    hnsw_indexes,
)
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, wait_for
from worker.process.index_builder import TABLE_WAIT_SECONDS

Conn = psycopg.Connection[Any]

OTHERS_SECONDS = TABLE_WAIT_SECONDS + 20
RELEASED_SECONDS = 60

# What the hostile tenant holds, in a transaction of its own, on its table `{table}`.
HOLDS = {
    "the tenant holds its table in SHARE UPDATE EXCLUSIVE mode": (
        "LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE"
    ),
    "the tenant leaves a write to its table uncommitted": (
        "INSERT INTO {table} VALUES (1000000, 'not yet')"
    ),
}


@dataclass(frozen=True)
class World:
    dsn: str  # the superuser's
    owner: str  # owns both tenants' tables
    hostile: str  # may write its own table, and lock it
    worker: str  # embeddings.grant_worker(), and a member of `owner`

    def connect(self, role: str | None = None, *, autocommit: bool = True) -> Conn:
        dsn = self.dsn if role is None else make_conninfo(self.dsn, user=role)
        return psycopg.connect(dsn, autocommit=autocommit)


@pytest.fixture
def world(cluster: Cluster, template_db: str) -> Iterator[World]:
    name = cluster.create_database(template=template_db)
    suffix = uuid.uuid4().hex[:8]
    found = World(cluster.dsn(name), *(f"{kind}_{suffix}" for kind in ("owner", "x", "worker")))
    roles = (found.owner, found.hostile, found.worker)
    with found.connect() as su:
        for role in roles:
            su.execute(f"CREATE ROLE {role} LOGIN")
        su.execute(f"GRANT CREATE ON SCHEMA public TO {found.owner}")
        su.execute("SELECT embeddings.grant_worker(%s)", (found.worker,))
        su.execute(f"GRANT {found.owner} TO {found.worker}")
    yield found
    with found.connect() as su:
        for role in roles:
            su.execute(f"DROP OWNED BY {role} CASCADE")
    cluster.drop_database(name)
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        for role in roles:
            admin.execute(f"DROP ROLE {role}")


def deferred_table_of(world: World, table: str) -> None:
    """`table`, owned by the tenants' owner, watched with its index deferred, 3 rows kept."""
    with world.connect() as su:
        deferred_table(su, table, MINILM, kept_rows=3)
        su.execute(f"ALTER TABLE {table} OWNER TO {world.owner}")
        su.execute(f"GRANT INSERT, UPDATE ON {table} TO {world.hostile}")


def deferred(world: World) -> int:
    with world.connect() as su:
        return deferred_count(su)


def build_waits_on(world: World, table: str) -> bool:
    with world.connect() as su:
        return build_waits(su, table)


@pytest.mark.parametrize("hold", HOLDS)
def test_a_hostile_tenant_holds_up_only_its_own_index(
    world: World, model_path: str, hold: str
) -> None:
    require_minilm()
    deferred_table_of(world, "hostile")
    worker = WorkerProcess(
        make_conninfo(world.dsn, user=world.worker),
        {
            "EMBED_MODEL": MINILM,
            "EMBED_MODEL_PATH": model_path,
            "EMBED_THREADS": "1",
            "EMBED_POLL_SECONDS": "1",
        },
    )
    try:
        with world.connect(world.hostile, autocommit=False) as hostile:
            hostile.execute(HOLDS[hold].format(table="hostile"))
            worker.wait_ready()
            wait_for(
                lambda: build_waits_on(world, "hostile"),
                timeout=60,
                what="the hostile tenant's index build to wait",
            )
            deferred_table_of(world, "other")
            try:
                wait_for(
                    lambda: deferred(world) == 1,
                    timeout=OTHERS_SECONDS,
                    what=f"the other tenant's index while {hold}",
                )
            except TimeoutError as exc:  # what the worker did meanwhile
                raise TimeoutError(f"{exc}\n{worker.log_text()[-6000:]}") from None
            with world.connect() as su:
                assert hnsw_indexes(su, "other") == [(deferred_index_name(su, "other"), True)]
                assert not any(valid for _, valid in hnsw_indexes(su, "hostile"))
            hostile.rollback()
        wait_for(
            lambda: deferred(world) == 0,
            timeout=RELEASED_SECONDS,
            what="the hostile tenant's index once it let go",
        )
    finally:
        worker.stop()
    with world.connect() as su:
        assert hnsw_indexes(su, "hostile") == [(deferred_index_name(su, "hostile"), True)]
