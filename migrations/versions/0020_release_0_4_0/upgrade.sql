-- Release 0.4.0, revision 0020: the tables of 0.3.0 brought up to date, before the code of
-- 0.4.0 is installed over them (migrations/versions/0020_release_0_4_0.py).
--
-- Every statement here is idempotent: ALTER TABLE ... ADD COLUMN IF NOT EXISTS, conversions
-- that leave converted rows alone. Tables new in 0.4.0 need no line here: sql/ creates them.

-- Full-text fields (sql/59_hybrid.sql): the title's weight. With IF NOT EXISTS the column and
-- its check come together or not at all.
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS fts_title_weight double precision
    CONSTRAINT targets_fts_title_weight_check CHECK (fts_title_weight >= 1);
