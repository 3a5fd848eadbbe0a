-- Release 0.3.0, revision 0019: the tables of 0.2.0 brought up to date, before the code of
-- 0.3.0 is installed over them (migrations/versions/0019_release_0_3_0.py).
--
-- Every statement here is idempotent: ALTER TABLE ... ADD COLUMN IF NOT EXISTS, conversions
-- that leave converted rows alone. Tables new in 0.3.0 need no line here: sql/ creates them.
-- Nothing yet: 0.3.0 has changed functions only (sql/).
SELECT 1;
