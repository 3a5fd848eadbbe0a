"""docs/security.md's "Revoking from PUBLIC": what an administrator revokes on our schemas."""

from __future__ import annotations

HARDENING = [
    f"REVOKE USAGE ON SCHEMA {ns} FROM PUBLIC; "
    f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {ns} FROM PUBLIC; "
    f"REVOKE ALL ON ALL TABLES IN SCHEMA {ns} FROM PUBLIC"
    for ns in ("embeddings", "embeddings_internal")
]
