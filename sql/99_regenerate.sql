-- Last of the install files: what needs the code just installed. The default queue, and the
-- fingerprints' key expressions kept by the code before (the code just installed may build them
-- otherwise: sql/64_verify.sql). Then what the registry describes is brought in line with the
-- code. On a fresh install there is nothing to do; over an existing one (a migration's code
-- reinstall, worker/schema/install.py) the functions and views were dropped and created again,
-- so:
--   * every registered queue gets back a pgmq queue dropped by hand (and every live queue
--     without a backfill lane gets one);
--   * every target whose table exists gets its generated functions and triggers regenerated
--     from the current generator (dropped first: names or shapes may have changed), and its
--     side or chunk table is its table owner's;
--   * every registered worker role that still exists gets its grants again;
--   * every target's definition_digest is taken again from the catalog as it is now (after its
--     functions were regenerated: its problem is part of it), its version kept. The version
--     describes the definition as it is (the event trigger gives a new one at every schema
--     change that needs it): the digest is what that version was given for. An upgrade from a
--     release without digests (0.3.0) left it NULL, and a release may digest otherwise: the
--     first schema change after the upgrade, one that changes nothing (a statistics target),
--     gave a new version, and every batch in flight was handed back.
-- It is SQL, run last by whatever installs sql/, so that it regenerates with the functions just
-- installed, in the same transaction.

SELECT embeddings_internal.ensure_queue('embedding_jobs');
DELETE FROM embeddings.fingerprint_keys;

DO $$
DECLARE
    q embeddings.queues;
    t embeddings.targets;
    worker_role name;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    FOR q IN SELECT * FROM embeddings.queues ORDER BY name LOOP
        PERFORM embeddings_internal.create_queue(q.name, q.live_queue);
    END LOOP;
    FOR q IN SELECT * FROM embeddings.queues WHERE live_queue IS NULL ORDER BY name LOOP
        PERFORM embeddings_internal.ensure_queue(q.name);
    END LOOP;
    FOR t IN SELECT * FROM embeddings.targets tg
             WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = tg.source) ORDER BY tg.id LOOP
        PERFORM embeddings_internal.drop_triggers(t);
        PERFORM embeddings_internal.install_triggers(t);  -- tables it returns were covered already
        -- A target with a problem (no functions generated) may have left its side or chunk
        -- table with its table's old owner.
        BEGIN
            PERFORM embeddings_internal.give_store_to_owner(t);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings: could not give the side or chunk table of % to its table''s owner (%)',
                embeddings_internal.target_name(t), SQLERRM;
        END;
    END LOOP;
    UPDATE embeddings.targets tg SET definition_digest = embeddings_internal.definition_digest(tg)
    WHERE tg.definition_digest IS DISTINCT FROM embeddings_internal.definition_digest(tg);
    FOR worker_role IN SELECT r.role_name FROM embeddings_internal.worker_role_names() AS r(role_name)
                     ORDER BY r.role_name LOOP
        PERFORM embeddings.grant_worker(worker_role);
    END LOOP;
    PERFORM set_config('embeddings.following', 'off', true);
END
$$;
