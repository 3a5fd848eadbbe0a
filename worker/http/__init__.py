"""The worker's HTTP side (on when EMBED_HTTP_PORT is set): health, readiness, metrics,
/embed, /search and push mode."""
