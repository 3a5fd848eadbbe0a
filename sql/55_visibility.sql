-- What a newcomer needs to see: why jobs wait (deferrals), which model watch() uses by default,
-- and whether a table still carries the Supabase guide's triggers.

-- Records deferrals (one reason per target): why the worker put a target's jobs back.
-- Executable by the worker roles only (grant_worker()): Postgres checks EXECUTE against the
-- real caller, where a check inside this SECURITY DEFINER function would see its owner.
CREATE FUNCTION embeddings_internal.note_deferrals(target_ids integer[], reasons text[], job_counts integer[])
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO embeddings.deferrals AS d (target_id, reason, jobs)
    SELECT n.target_id, n.reason, n.jobs
    FROM unnest(target_ids, reasons, job_counts) AS n(target_id, reason, jobs)
    JOIN embeddings.targets t ON t.id = n.target_id
    ON CONFLICT (target_id) DO UPDATE
    SET reason = excluded.reason, jobs = excluded.jobs, last_seen = now(),
        since = CASE WHEN d.reason = excluded.reason THEN d.since ELSE now() END
$$;

-- Forgets the deferrals of targets the worker served again (worker roles only, as above), but
-- of one whose jobs are still held: a worker that cannot serve it (another model path, a
-- provider it cannot reach) recorded why, and status, doctor and the metrics say so until its
-- holds end; a worker that can serve takes them meanwhile (worker/process/held.py). Held as
-- release_held() (44_changes.sql) finds them, by pgmq's vt index. A served target seldom has a
-- deferral: its lanes are looked at only then.
CREATE FUNCTION embeddings_internal.clear_deferrals(target_ids integer[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    t embeddings.targets;
    lane_table text;
    held boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM embeddings.deferrals d WHERE d.target_id = ANY (target_ids)) THEN
        RETURN;  -- (every batch that serves a target calls it: this is the cost it pays)
    END IF;
    FOR t IN SELECT tg.* FROM embeddings.targets tg JOIN embeddings.deferrals d ON d.target_id = tg.id
             WHERE tg.id = ANY (target_ids) ORDER BY tg.id LOOP
        held := false;
        FOREACH lane_table IN ARRAY ARRAY[embeddings_internal.lane_table(t.queue, 'live'),
                                          embeddings_internal.lane_table(t.queue, 'backfill')] LOOP
            CONTINUE WHEN to_regclass(format('pgmq.%I', lane_table)) IS NULL;
            EXECUTE format($q$
                SELECT EXISTS (SELECT FROM pgmq.%I q
                               WHERE q.vt > $2
                                 AND q.message #> '{held,until}' = pg_catalog.to_jsonb(EXTRACT(epoch FROM q.vt))
                                 AND q.message #> '{held,target}' = pg_catalog.to_jsonb($1))
                $q$, lane_table) INTO held USING t.id, pg_catalog.clock_timestamp();
            EXIT WHEN held;
        END LOOP;
        CONTINUE WHEN held;
        DELETE FROM embeddings.deferrals d WHERE d.target_id = t.id;
    END LOOP;
END
$$;

-- The model watch() uses when none is named.
CREATE FUNCTION embeddings.default_model() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT name FROM embeddings.models WHERE is_default
$$;
COMMENT ON FUNCTION embeddings.default_model IS
    'The model watch() uses when none is named.';

-- Makes `name` the model watch() uses when none is named (existing targets keep theirs).
CREATE FUNCTION embeddings.set_default_model(name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'embeddings.set_default_model(): name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM embeddings.models m WHERE m.name = set_default_model.name) THEN
        RAISE EXCEPTION 'unknown model "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = embeddings_internal.unknown_model_hint(name);
    END IF;
    UPDATE embeddings.models m SET is_default = false WHERE m.is_default AND m.name <> set_default_model.name;
    UPDATE embeddings.models m SET is_default = true WHERE m.name = set_default_model.name;
    RETURN name;
END
$$;
COMMENT ON FUNCTION embeddings.set_default_model IS
    'Makes a model the one watch() uses when none is named. Schema owner only.';

-- Refuses to install our triggers on a table that still has the Supabase guide's
-- util.queue_embeddings triggers: both sets would queue a job for every change.
CREATE FUNCTION embeddings_internal.refuse_guide_triggers(source regclass, triggers boolean) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    theirs text;
BEGIN
    IF NOT triggers THEN
        RETURN;
    END IF;
    SELECT string_agg(format('DROP TRIGGER %I ON %s;', tg.tgname, source), ' ' ORDER BY tg.tgname)
    INTO theirs
    FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    WHERE tg.tgrelid = source AND NOT tg.tgisinternal AND p.proname = 'queue_embeddings';
    IF theirs IS NOT NULL THEN
        RAISE EXCEPTION '% already has the Supabase guide''s util.queue_embeddings triggers: ours would queue every change twice', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Keep theirs and let the worker serve their jobs: watch(..., triggers => false). Or drop theirs first: %s', theirs);
    END IF;
END
$$;
