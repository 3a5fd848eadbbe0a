-- Release 0.3.0, revision 0019: the tables new in 0.3.0, as sql/ makes them, after upgrade.sql
-- (docs/development.md, "Schema changes": a table new in a release is made by its revision too,
-- so that a later release's upgrade.sql can rely on it before sql/ runs). Idempotent.

-- sql/10_schema.sql: the side and chunk tables watch() made (issue 36). Its rows for the stores
-- a database already has come from sql/10_schema.sql, re-runnable.
CREATE TABLE IF NOT EXISTS embeddings.made_tables (
    store  regclass PRIMARY KEY,
    source regclass NOT NULL,
    kind   text NOT NULL CHECK (kind IN ('side', 'chunks'))
);
REVOKE ALL ON embeddings.made_tables FROM PUBLIC;
