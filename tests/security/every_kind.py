"""One watched table of every kind on the hostile owner's tables, so that every generator of
per-table code has run: what the catalog tests of tests/security read."""

from __future__ import annotations

from tests.security.conftest import Roles
from tests.support.models import MINILM

# One target of each kind, on the owner's tables: (table definition, watch()'s arguments).
KINDS = {
    "plain": ("id int PRIMARY KEY, body text", "'body', model => %s"),
    "composite": ("region text, n int, body text, PRIMARY KEY (region, n)", "'body', model => %s"),
    "side": ("id int PRIMARY KEY, body text", "'body', model => %s, store => 'side'"),
    "chunked": ("id int PRIMARY KEY, body text", "'body', model => %s, chunk_tokens => 16"),
    "function": ("id int PRIMARY KEY, body text", "'doc_text', model => %s"),
    "documents": (
        "id int PRIMARY KEY, body bytea",
        "'body', model => %s, chunk_tokens => 16, context_header => '{title}: '",
    ),
}


def install_every_kind(roles: Roles) -> dict[str, int]:
    """The owner's tables of every kind, watched (with full-text search on three, one of them
    with a weighted title, one a document target's chunk table, whose tsvector reads the
    chunks' heading paths; and a model change under way on another): every generator has run."""
    with roles.connect(roles.owner) as owner:
        for kind, (columns, _) in KINDS.items():
            owner.execute(f"CREATE TABLE docs_{kind} ({columns})")
        owner.execute(
            "CREATE FUNCTION doc_text(d docs_function) RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT d.body $$"
        )
    targets = {}
    with roles.connect() as su:
        for kind, (_, args) in KINDS.items():
            row = su.execute(f"SELECT embeddings.watch('docs_{kind}', {args})", (MINILM,))
            targets[kind] = int((row.fetchone() or (0,))[0])
        su.execute("SELECT embeddings.enable_fts('docs_plain', 'english')")
        su.execute("SELECT embeddings.enable_fts('docs_side', 'english', title_weight => 2)")
        su.execute("SELECT embeddings.enable_fts('docs_documents', 'english')")
        su.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
            " VALUES ('other-model', 8, 512, 'mean') ON CONFLICT DO NOTHING"
        )
        su.execute("SELECT embeddings.watch('docs_plain', 'body', model => 'other-model')")
    return targets
