"""Shared fixtures: the session's Postgres cluster and a fresh database per test.

Integration tests get a database cloned from a template that already carries the migrated
schema (CREATE DATABASE ... TEMPLATE is much faster than migrating each time). Unit tests use
none of this, and the cluster starts only when a test first asks for a database.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import release
from tests.support.cluster import Cluster, session_cluster
from worker import logs, schema

# The suite never reaches the real Hugging Face hub: models are fetched on first use, so a test
# that wants a download serves it from the stand-in (tests/support/fakehub.py, HF_ENDPOINT) and
# clears this itself.
os.environ.setdefault("EMBED_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _cli_logging_removed() -> Iterator[None]:
    """`cli.main()` run in the test's process configures logging (worker/logs.py): the root
    logger's handler then writes to the test's stderr as pytest captures it, a file closed at
    the test's end. Every record after it, from any later test of the process (an in-process
    worker's thread), was "--- Logging error --- ValueError: I/O operation on closed file".
    The handler goes with the test that made it, and the root logger's level is put back."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers[:]:
        if any(isinstance(f, logs.RedactingFilter) for f in handler.filters):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with session_cluster() as found:
        yield found


@pytest.fixture(scope="session")
def template_db(cluster: Cluster) -> Iterator[str]:
    """A migrated database that per-test databases are cloned from."""
    name = cluster.create_database(prefix="template")
    schema.migrate(cluster.dsn(name))
    yield name
    cluster.drop_database(name)


@pytest.fixture
def dsn(cluster: Cluster, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = cluster.create_database(template=template_db)
    yield cluster.dsn(name)
    cluster.drop_database(name)


@pytest.fixture
def empty_dsn(cluster: Cluster) -> Iterator[str]:
    """A fresh database without our schema."""
    name = cluster.create_database(prefix="empty")
    yield cluster.dsn(name)
    cluster.drop_database(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def generated_models_root(request: pytest.FixtureRequest) -> Path:
    """Where the tiny random-weight models are built (tests/support/modelgen.py): pytest's
    cache, so later runs reuse them; a temporary folder when the cache plugin is off
    (`-p no:cacheprovider`)."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("embed-worker-models"))
    return Path(request.getfixturevalue("tmp_path_factory").mktemp("models"))


@pytest.fixture(scope="session")
def unpack_release(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], release.Release]:
    """release.unpack() of a version into a fresh temporary folder; where this checkout cannot
    produce its source, the test that asked skips, saying why."""

    def unpack(version: str) -> release.Release:
        try:
            return release.unpack(version, tmp_path_factory.mktemp("releases"))
        except release.ReleaseUnavailable as exc:
            pytest.skip(str(exc))

    return unpack
