-- Pruning the fingerprints of deleted rows (sql/64_verify.sql keeps one per stored vector):
-- done by the verifying sweep, a bounded step per slice, so that the application's deletes pay
-- nothing for it.

-- One step of pruning target t's fingerprints: the next `max_rows` of them (by slot and key,
-- in their primary key's order, from where the last step stopped) lose those of rows that no
-- longer exist, and those of slots that hold no vector of t any more (a column replaced by a
-- model change's swap). So a table with deletes keeps about one fingerprint per row, and the
-- application's deletes pay nothing for it. Whether a row exists is asked of the target's
-- embeddings_<id>_existing(), as the table's owner; the rest happens here, where no code of the
-- owner's runs. A fingerprint the worker rewrites meanwhile (its row inserted again) is kept:
-- only one still as it was read goes (and one lost too early costs no more than verifying and
-- embedding its row once again). Returns the number of fingerprints deleted.
CREATE FUNCTION embeddings_internal.prune_fingerprints(t embeddings.targets, max_rows integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c embeddings.verify_cursors;
    slots smallint[] := array_remove(ARRAY[(embeddings_internal.fingerprint_slot(t, false)).slot,
                                           (embeddings_internal.fingerprint_slot(t, true)).slot], NULL);
    nkeys integer := cardinality(t.key_columns);
    scanned integer;
    last_slot smallint;
    last_key jsonb;
    pruned integer;
BEGIN
    IF (embeddings_internal.fingerprint_slot(t, false)).slot IS NULL THEN
        RETURN 0;  -- its vectors' column is gone: not servable, nothing to compare with
    END IF;
    SELECT * INTO c FROM embeddings.verify_cursors vc WHERE vc.target_id = t.id;
    EXECUTE format($q$
        WITH batch AS (
            SELECT f.slot, f.key, f.written_at FROM embeddings.fingerprints f
            WHERE f.target_id = $1%s
            ORDER BY f.target_id, f.slot, f.key LIMIT $4  -- the primary key's order: no sort
        ),
        -- (the key arrays in one order: each a scan of the same materialized batch)
        living AS (
            SELECT e.k FROM embeddings.%I(
                (SELECT pg_catalog.array_agg(b.key::text) FROM batch b WHERE b.slot = ANY ($5))%s) AS e(k)
        ),
        gone AS (
            DELETE FROM embeddings.fingerprints f USING batch b
            WHERE f.target_id = $1 AND f.slot = b.slot AND f.key = b.key AND f.written_at = b.written_at
              AND (b.slot <> ALL ($5) OR b.key::text NOT IN (SELECT l.k FROM living l))
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM batch)::int,
               (SELECT b.slot FROM batch b ORDER BY b.slot DESC, b.key DESC LIMIT 1),
               (SELECT b.key FROM batch b ORDER BY b.slot DESC, b.key DESC LIMIT 1),
               (SELECT count(*) FROM gone)::int
        $q$,
        -- (no OR for a cursor not yet set: the condition must be the index's range)
        CASE WHEN c.prune_slot IS NOT NULL THEN ' AND (f.slot, f.key) > ($2, $3)' ELSE '' END,
        'embeddings_' || t.id || '_existing',
        (SELECT string_agg(format(', (SELECT pg_catalog.array_agg(%s) FROM batch b WHERE b.slot = ANY ($5))',
                                  CASE WHEN nkeys = 1 THEN 'b.key #>> ''{}''' ELSE format('b.key ->> %s', i - 1) END),
                           '' ORDER BY i)
         FROM generate_series(1, nkeys) i))
    INTO scanned, last_slot, last_key, pruned
    USING t.id, c.prune_slot, c.prune_after, max_rows, slots;
    -- The end of the fingerprints: the next step starts over.
    UPDATE embeddings.verify_cursors vc
    SET prune_slot = CASE WHEN scanned < max_rows THEN NULL ELSE last_slot END,
        prune_after = CASE WHEN scanned < max_rows THEN NULL ELSE last_key END
    WHERE vc.target_id = t.id;
    RETURN pruned;
END
$$;
