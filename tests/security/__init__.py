"""The security tier (issue 24): hostile roles against a real cluster with least-privilege roles.

- test_hostile_owner.py: a table owner (no superuser) tries every path by which embed-worker
  could run its code with more rights than its own.
- test_no_grants.py: a login without grants calls every function of schema `embeddings`; nothing
  an operator reads changes.
- test_roles_matrix.py: the table of roles x actions in docs/security.md, each cell tried.
- test_readable_tables.py: what PUBLIC and every role built into Postgres (pg_monitor, ...) may
  read of ours (schema embeddings, our pgmq queues and archives, side and chunk tables), as
  docs/security.md names it.
- The hostile HTTP client (issue 24 §5) is played by tests/acceptance/test_http_fuzz.py,
  test_http_input.py and test_http_heads.py (heads sent a byte at a time, idle connections,
  wrong tokens: slots, probes and waiting connections, issue 46) against the real process; a test of it that needs these roles (a search as
  the worker role for a table it must not see, say) belongs here, beside the others.
"""
