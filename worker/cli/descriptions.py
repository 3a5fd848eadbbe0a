"""What `embed-worker COMMAND --help` says a command does (the parser is worker/cli/parser.py)."""

from __future__ import annotations

DESCRIPTIONS = {
    "migrate": "Install the embeddings schema in the database, or upgrade it to this version "
    "(Alembic upgrade head). Safe to run again: an up-to-date database is left as it is.",
    "run": "Run the worker: lease jobs from the queue, embed the rows' content, store the "
    "vectors. Registry models are downloaded on first use unless EMBED_OFFLINE=1. With "
    "--http-port it also serves HTTP (docs/http.md): GET /healthz, /readyz, /metrics; POST "
    "/embed (vectors for your application), POST /search (the rows, or documents of a chunked "
    "table, nearest to a query: vector or hybrid, with a filter) and POST /functions/v1/embed. "
    "The POST routes take the bearer token EMBED_HTTP_TOKEN (`Authorization: Bearer <token>`; "
    "without one they answer 403 off loopback unless EMBED_HTTP_ALLOW_UNAUTHENTICATED=1). "
    "/search runs as the role of EMBED_SEARCH_DATABASE_URL (unset: the worker's own "
    "DATABASE_URL role, which reads no table of yours): it sees what that role may SELECT, "
    "row-level security included.",
    "status": "One row per watched table: rows, embedded, cleared (blank content), pending jobs "
    "with progress and ETA, dead letters, and why jobs wait (deferred). Row counts of large "
    "tables are estimates (~) unless --exact; pending and failed are always exact.",
    "embed": "Print the embeddings of TEXT... (or of standard input's lines with `-`) as a "
    "JSON list of vectors.",
    "search": "Embed QUERY with the model of TABLE's target and print the nearest rows.",
    "failures": "List dead-lettered jobs (rows that exhausted their attempts), or re-queue them.",
    "sweep": "Queue the rows that should have a vector and have no job (embeddings.sweep()); "
    "with --verify, also check the next slice of each table's vectors against the content "
    "and definition they were made from, and queue those that no longer match. Run it on a "
    "schedule; `status` shows how far verification got.",
    "doctor": "Check the database, the models and the queue for common problems, and say what "
    "to do about each. Exits 1 when it finds one.",
    "model": "List the known models (and the database's remote ones) or download one.",
    "plan": "Estimate what embedding TABLE will take before it starts: the rows, tokens and "
    "requests, and the cost at the model's price_per_million_tokens. Without --model: the rows "
    "that have no vector yet (a backfill); with --model: every row (a model change). A table's "
    "content is never read: tokens (and the rows of a table not watched) are estimated from "
    "its statistics; where it has none yet, plan says so (ANALYZE it to get them).",
    "deploy": "Print one of the files docs/operating.md installs, as this version ships it "
    "(an installed package has no checkout beside it): the systemd unit, the env file with "
    "every setting commented, the Prometheus alerting rules, the Grafana dashboard. Redirect "
    "it where it goes, e.g. `embed-worker deploy systemd > /etc/systemd/system/"
    "embed-worker.service`. `embed-worker deploy kubernetes DIR` writes the Kubernetes "
    "kustomization (Deployment, Service, PodDisruptionBudget, KEDA ScaledObject) into DIR, "
    "refusing to replace files there; then `kubectl apply -k DIR`. Reads no database.",
}
