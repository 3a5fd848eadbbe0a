"""doctor's check of logical replication: a table a subscription writes to, watched without
`replica => true`. The apply worker runs as session_replication_role = replica, where only
triggers enabled ALWAYS or REPLICA fire: the rows it writes are never queued, and status cannot
tell them from rows settled unless it counts them (its `not queued` note, small tables or
`--exact`)."""

from __future__ import annotations

import psycopg

from worker import db, escapes, queries
from worker.cli.findings import Finding

CHECK = "replication"


def findings(conn: db.Connection) -> list[Finding]:
    """One warning per watched table a subscription of this database writes to (conn: a
    database with the schema installed); none where the catalog cannot be read."""
    try:
        with conn.transaction():
            found = conn.execute(queries.get("subscribed_targets")).fetchall()
    except psycopg.Error:
        return []  # (a role that cannot read the registry: the status check said so already)
    by_table: dict[str, list[str]] = {}
    for table, subscription in found:
        by_table.setdefault(str(table), []).append(str(subscription))
    return [subscribed_finding(table, subs) for table, subs in by_table.items()]


def subscribed_finding(table: str, subscriptions: list[str]) -> Finding:
    return Finding(
        "warn",
        f"{CHECK} {table}",
        f"subscription {', '.join(subscriptions)} writes to {table}, watched without"
        " replica => true: the rows replication writes are never queued",
        "watch it again with replica => true (SELECT embeddings.watch("
        f"{escapes.shown_literal(table)}, <its content>, model => <its model>,"
        " replica => true);), which queues its rows without a vector; or, where the"
        " publisher's worker embeds and the vector column is replicated, unwatch it here"
        " (docs/operating.md#logical-replication)",
    )
