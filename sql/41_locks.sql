-- Taking a user table's ACCESS EXCLUSIVE lock without stalling the application.
--
-- A request for ACCESS EXCLUSIVE that waits (behind a long read, say) queues every later
-- statement on the table behind itself, reads and writes alike: waiting two seconds for it
-- stalled each application statement up to two seconds, and failed those with a shorter
-- lock_timeout. So our DDL-like calls on a user table (watch() adding a column or changing the
-- model, cancel_change(), the swap of complete_change()) ask in short attempts: each waits at
-- most embeddings_internal.lock_attempt_ms(), and between attempts we step aside for a growing,
-- jittered pause while the application's statements go through. Past a deadline the call
-- fails with lock_not_available and names the sessions holding the table; the worker's swap
-- just tries again later (worker/process/changes.py), and reports how long it has waited.

-- How long one attempt may queue ahead of the application's statements: 20 ms unless the
-- setting embeddings.lock_attempt_ms says otherwise.
CREATE FUNCTION embeddings_internal.lock_attempt_ms() RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('embeddings.lock_attempt_ms', true), '')::integer, 20)
$$;

-- How long watch() and cancel_change() keep trying before they give up with a clear error:
-- 30 s unless the setting embeddings.lock_wait says otherwise (an interval: '5min'); a
-- caller's own lock_timeout, when shorter, wins.
CREATE FUNCTION embeddings_internal.lock_wait() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT least(coalesce(nullif(current_setting('embeddings.lock_wait', true), '')::interval, interval '30 seconds'),
                 CASE WHEN current_setting('lock_timeout') NOT IN ('0', '')
                      THEN current_setting('lock_timeout')::interval END)
$$;

-- The sessions holding a lock on `rel` (pid, what they run, since when), for the error message
-- and for status (embeddings_internal.stopped_targets()).
CREATE FUNCTION embeddings_internal.lock_holders(rel regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(DISTINCT format('pid %s (%s, %s, since %s)', a.pid, l.mode, a.state,
                                      to_char(coalesce(a.xact_start, a.query_start), 'HH24:MI:SS')), '; ')
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.relation = rel AND l.granted AND l.pid <> pg_backend_pid()
$$;

-- Locks `rel` in ACCESS EXCLUSIVE mode in attempts of embeddings_internal.lock_attempt_ms(), with
-- pauses between them (10 ms doubling up to 1 s, each jittered by +-50%), for up to `max_wait`
-- (default embeddings_internal.lock_wait()). Then lock_not_available, naming the holders. The caller's
-- lock_timeout is as it was afterwards.
CREATE FUNCTION embeddings_internal.lock_table(rel regclass, max_wait interval DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    saved text := current_setting('lock_timeout');
    deadline timestamptz := clock_timestamp() + coalesce(max_wait, embeddings_internal.lock_wait());
    pause double precision := 0.01;
    attempts integer := 0;
    holders text;
BEGIN
    IF EXISTS (SELECT FROM pg_locks l WHERE l.locktype = 'relation' AND l.relation = rel
               AND l.pid = pg_backend_pid() AND l.mode = 'AccessExclusiveLock' AND l.granted) THEN
        RETURN;  -- ours already
    END IF;
    PERFORM set_config('lock_timeout', embeddings_internal.lock_attempt_ms() || 'ms', true);
    LOOP
        attempts := attempts + 1;
        BEGIN
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', rel);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        IF clock_timestamp() + make_interval(secs => pause) > deadline THEN
            holders := embeddings_internal.lock_holders(rel);
            PERFORM set_config('lock_timeout', saved, true);
            RAISE EXCEPTION 'could not lock % in % attempt(s) over % s: other sessions hold it (%)', rel, attempts,
                    round(extract(epoch FROM coalesce(max_wait, embeddings_internal.lock_wait()))::numeric, 2),
                    coalesce(holders, 'none left')
                USING ERRCODE = 'lock_not_available',
                      HINT = 'We do not queue ahead of the application''s statements for long. End or wait for '
                             'the long transaction(s) named, then call again; or allow a longer wait with '
                             'SET embeddings.lock_wait = ''5min''.';
        END IF;
        PERFORM pg_sleep(pause * (0.5 + random()));
        pause := least(pause * 2, 1.0);
    END LOOP;
    PERFORM set_config('lock_timeout', saved, true);
END
$$;

-- Orders this transaction's writes of target `target_id`'s documents `keys` after those of any
-- other transaction writing one of them, until COMMIT: waits for them (in key order, so that
-- two writers never wait for each other crosswise; at most the caller's lock_timeout, then
-- lock_not_available). Returns the number of documents. SECURITY DEFINER: worker roles have no
-- right on the table.
CREATE FUNCTION embeddings_internal.lock_documents(target_id integer, keys text[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hashes uuid[] := ARRAY(SELECT DISTINCT md5(k)::uuid FROM unnest(keys) AS k ORDER BY 1);
BEGIN
    INSERT INTO embeddings.documents_written (target_id, key_md5)
    SELECT lock_documents.target_id, h FROM unnest(hashes) AS h ORDER BY h
    ON CONFLICT DO NOTHING;
    DELETE FROM embeddings.documents_written d
    WHERE d.target_id = lock_documents.target_id AND d.key_md5 = ANY (hashes);
    RETURN cardinality(hashes);
END
$$;

-- Orders this transaction's watch() of `source` after any other transaction's watch() of a table
-- of the same partition tree (its root and every partition, at every level; a table outside
-- any tree is a tree of one), until COMMIT. watch_check_table() refuses a partition beside its
-- watched parent by reading embeddings.targets: two sessions watching the parent and a
-- partition at once each read it before the other committed, both passed, and both tables were
-- watched on one column. The lock is the row (0, md5 of the root's oid) of
-- embeddings.documents_written (target ids start at 1, so 0 is no target's): no role but the
-- schema's owner can take it. The row is updated and kept, not inserted and deleted again as
-- lock_documents() does: a REPEATABLE READ or SERIALIZABLE caller's snapshot predates the wait,
-- so its check would not see the other watch() it waited for; updating a row another transaction
-- updated after that snapshot fails with serialization_failure, as any such write does, where a
-- row inserted and deleted by the other would have left no trace to fail on. The wait is
-- bounded by embeddings_internal.lock_wait() (30 s, or a shorter lock_timeout of the caller's),
-- then lock_not_available, saying what it waited for. The caller's lock_timeout is as it was.
CREATE FUNCTION embeddings_internal.lock_partition_tree(source regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    saved text := current_setting('lock_timeout');
    root regclass := coalesce(pg_partition_root(source), source);
    waited interval := embeddings_internal.lock_wait();
    tree uuid := md5(root::oid::text)::uuid;
BEGIN
    PERFORM set_config('lock_timeout', greatest(1, (extract(epoch FROM waited) * 1000)::bigint) || 'ms', true);
    BEGIN
        INSERT INTO embeddings.documents_written AS d (target_id, key_md5) VALUES (0, tree)
        ON CONFLICT (target_id, key_md5) DO UPDATE SET key_md5 = d.key_md5;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('lock_timeout', saved, true);
        RAISE EXCEPTION 'could not watch %: another session''s watch() of % (or of a partition of it) has not committed within % s',
                source, root, round(extract(epoch FROM waited)::numeric, 2)
            USING ERRCODE = 'lock_not_available',
                  HINT = 'Commit or roll back that transaction, then call again; or allow a longer wait with '
                         'SET embeddings.lock_wait = ''5min''.';
    END;
    PERFORM set_config('lock_timeout', saved, true);
END
$$;
