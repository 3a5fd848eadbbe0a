-- The live lane's inbox (22_inbox.sql: how the triggers fill it and the worker empties it).

-- Rows: `columns` is the column shape of 20_queue.sql (one entry per key column, all of one
-- length, at most inbox_keys_per_row() keys), `keys` that length, `statement_keys` how many
-- keys of the target its statement wrote in all (the move sends a bulk statement's to the
-- backfill lane; NULL where an older trigger wrote the row), `enqueued_at` the writing
-- transaction's start, carried into the job message. No index and no foreign key: each would
-- be paid by every watched statement; a target's rows go with it (forget_target), and moving
-- joins the registry.
CREATE TABLE IF NOT EXISTS embeddings.inbox (
    target      integer NOT NULL,
    keys        integer NOT NULL,
    columns     jsonb NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    statement_keys integer
);

