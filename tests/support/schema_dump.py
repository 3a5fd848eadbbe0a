"""A database's schema as pg_dump prints it, for comparing a migrated database with a fresh one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from worker import schema

# pg_dump's header of each object: "-- Name: watch(...); Type: FUNCTION; Schema: embeddings; ..."
_HEADER = re.compile(r"^-- Name: (?P<name>.*); Type: (?P<type>[^;]*); Schema: (?P<schema>[^;]*);")
# Per-target functions watch() generates: they belong with the user's table, not our schema.
GENERATED = re.compile(r"^embeddings_\d+_")


def _pg_dump(dsn: str) -> str:
    server_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    pg_dump = str(server_bin[-1]) if server_bin else "pg_dump"
    return subprocess.run(
        [
            pg_dump,
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--exclude-table=public.{schema.VERSION_TABLE}",
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _normalized(text: str) -> str:
    # The \\restrict lines carry a random key per dump (pg_dump 15.14+).
    ignored = r"^(--.*|SET .*|SELECT pg_catalog\.set_config.*|\\(un)?restrict .*)$"
    return re.sub(ignored, "", text, flags=re.MULTILINE)


def pg_dump_schema(dsn: str) -> str:
    """The schema as pg_dump prints it, minus what legitimately differs between databases."""
    return _normalized(_pg_dump(dsn))


def our_objects(dsn: str) -> dict[str, str]:
    """Each object pg_dump prints, by its header ("TYPE schema name"), leaving out the user's:
    objects in schema public (tables, their triggers and indexes, chunk tables) and the
    per-target generated functions. What a migrated database and a fresh install share."""
    objects: dict[str, str] = {}
    key: str | None = None
    for line in _pg_dump(dsn).splitlines(keepends=True):
        header = _HEADER.match(line)
        if header:
            name = header["name"].split("(")[0]
            skipped = header["schema"] == "public" or GENERATED.match(name)
            key = None if skipped else f"{header['type']} {header['schema']} {header['name']}"
            if key is not None:
                objects[key] = ""
        elif key is not None:
            objects[key] += line
    return {k: _normalized(v).strip() for k, v in objects.items()}
