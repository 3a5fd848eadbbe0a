"""The security tier (issue 24): hostile roles against a real cluster with least-privilege roles.

- test_hostile_owner.py: a table owner (no superuser) tries every path by which embed-worker
  could run its code with more rights than its own.
- test_no_grants.py: a login without grants calls every function of schema `embeddings`; nothing
  an operator reads changes.
- test_roles_matrix.py: the table of roles x actions in docs/security.md, each cell tried.
- The hostile HTTP client (issue 24 §5) gets its own module here, test_http_client.py.
"""
