-- Chunked targets: long documents split into chunks, one vector per chunk.
--
-- embeddings.watch(source, content, ..., chunk_tokens => N, chunk_overlap => M) hands over to
-- embeddings_internal.watch_chunked() below. The worker splits each document with the model's own
-- tokenizer and keeps its chunks in a table of their own, `<schema>.<table>_chunks` unless
-- chunk_table names another:
--
--   <the source's key column(s)>  the primary key's, or the key named by watch(key => ...): same
--                                  names and types. No foreign key to the source (one made
--                                  TRUNCATE of the source fail): deletes, key changes and
--                                  truncations are followed as for side tables (sql/56_side.sql),
--                                  and every read joins the source
--   seq         integer   the chunk's position in the document, from 0
--   chunk       text      the chunk's text, an exact slice of the document: what was embedded
--   chunk_hash  text      md5 of the model name and the chunk text: when a document changes, a
--                         chunk whose text did not change keeps its vector (no re-embedding)
--   <embedding_column>  halfvec(dim)  ('embedding' by default), with an HNSW cosine index
--   start_offset, end_offset  integer  where the chunk is in the document: `chunk` is the
--                         document's characters start_offset (from 0) up to end_offset
--                         (excluded), as Python slices (in SQL: substr(document, start_offset + 1,
--                         end_offset - start_offset)). Characters, not bytes. NULL for chunks
--                         an older release wrote, until their document is embedded again
--   headings    text[]    a document's chunk (format => ..., a bytea content column): the
--                         heading path of its section, the highest heading first ('{}': none);
--                         NULL for plain text
--   page        integer   a PDF's chunk: the page it starts on, from 1; NULL for other formats
--
-- Documents (docs/documents.md): with a bytea content column, or format => 'pdf' | 'docx' |
-- 'html' | 'markdown' | 'text' (a text column: 'html', 'markdown' or 'text'), the worker
-- extracts each row's text (the format detected from the bytes unless given), a heading starts
-- a chunk, and each chunk is embedded with a context header in front of it (the document's
-- title and the chunk's heading path, context_header => its template); `chunk` stays the exact
-- slice of the extracted text. Parsing runs in the worker, never in the writer's transaction;
-- a document that cannot be read fails alone, naming its format.
-- The source table gets no embedding column (embeddings.targets.embedding_attnum is NULL). Its
-- triggers are the generated ones of any target (sql/30_triggers.sql), minus the clear trigger: a
-- changed document keeps its old chunks until its new ones land (the old vectors are what makes
-- reuse possible), or until its new content fails for good (the worker then deletes them with
-- the chunk write, in the transaction that dead-letters the row: worker/pipeline/chunks/writing.py);
-- like a side-table target it has triggers that follow deletes and truncations.
-- The chunk table's key columns follow renames of the source's (embeddings_internal.follow_store_keys,
-- sql/56_side.sql, called by the schema-change event trigger).

-- The type modifier of column `col` of `source` (char(6): 10), NULL for none: a chunk table's key
-- column is typed as its source's, char(n) and numeric(p,s) included (a bare char is char(1)).
CREATE FUNCTION embeddings_internal.key_typmod(source regclass, col name) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(a.atttypmod, -1) FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- Creates the chunk table `chunk_table` (schema-qualified, quoted) for `source`, or checks that
-- the existing one has the expected shape. Generic over the key: one or several columns.
CREATE FUNCTION embeddings_internal.ensure_chunk_table(
    chunk_table text,
    source regclass,
    key_names name[],
    key_types regtype[],
    embedding_column name,
    dims integer
) RETURNS regclass
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vschema name := embeddings.vector_schema();
    existing regclass := to_regclass(chunk_table);
    columns text;
    keys text;
    problem text;
BEGIN
    IF existing IS NOT NULL THEN
        PERFORM embeddings_internal.check_made_store(existing, source, 'chunk_table');
        SELECT string_agg(format_type(need.typ, need.typmod) || ' ' || quote_ident(need.col), ', ') INTO problem
        FROM (SELECT k AS col, ty AS typ, embeddings_internal.key_typmod(source, k) AS typmod FROM unnest(key_names, key_types) AS u(k, ty)
              UNION ALL VALUES ('seq'::name, 'integer'::regtype, NULL::integer), ('chunk', 'text', NULL),
                               ('chunk_hash', 'text', NULL),
                               (embedding_column, format('%I.halfvec', vschema)::regtype, dims)) need
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = existing AND a.attname = need.col AND a.attnum > 0 AND NOT a.attisdropped
              AND a.atttypid = need.typ AND (need.typmod IS NULL OR a.atttypmod = need.typmod));
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'table % exists but is not a chunk table for % (missing or mistyped: %)',
                    existing, source, problem
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Drop it, or name another table with chunk_table => ...';
        END IF;
        RETURN existing;
    END IF;
    SELECT string_agg(format('%I %s NOT NULL', k, format_type(ty, embeddings_internal.key_typmod(source, k))), ', ' ORDER BY o),
           string_agg(format('%I', k), ', ' ORDER BY o)
    INTO columns, keys
    FROM unnest(key_names, key_types) WITH ORDINALITY AS u(k, ty, o);
    EXECUTE format(
        'CREATE TABLE %1$s (%2$s, seq integer NOT NULL, chunk text NOT NULL, chunk_hash text NOT NULL, '
        '%3$I %4$I.halfvec(%5$s) NOT NULL, PRIMARY KEY (%6$s, seq))',
        chunk_table, columns, embedding_column, vschema, dims, keys);
    existing := to_regclass(chunk_table);
    INSERT INTO embeddings.made_tables (store, source, kind) VALUES (existing, source, 'chunks')
    ON CONFLICT (store) DO UPDATE SET source = excluded.source, kind = excluded.kind;
    EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.halfvec_cosine_ops)', existing, embedding_column, vschema);
    -- The source's owner's, as its rows are: the functions that write it run as that role
    -- (sql/32_access.sql).
    EXECUTE format('ALTER TABLE %s OWNER TO %I', existing,
                   (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = source));
    EXECUTE format('COMMENT ON TABLE %s IS %L', existing,
                   format('Chunks of %s and their embeddings, kept by embed-worker (embeddings.watch)', embeddings_internal.display_name(source)));
    RETURN existing;
END
$$;

-- Gives chunk table `chunk_table` the chunks' offsets (start_offset, end_offset), then their
-- heading path and page (headings, page), when it lacks them: a chunk table an older release made
-- (its chunks' stay NULL until their document is embedded again), and every new one. Added by watch() last, after the full-text column a watch(...,
-- fts => ...) adds, so that a new chunk table has the column order of a 0.2.0 one given full-text
-- search and then upgraded (migrations/versions/0019_release_0_3_0/upgrade.sql adds them there);
-- a document target's before it, which reads `headings` (enable_fts(); 0.4.0's upgrade makes
-- that column again, at the end).
CREATE FUNCTION embeddings_internal.ensure_chunk_offsets(chunk_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF embeddings_internal.attnum_of(chunk_table, 'start_offset') IS NULL OR embeddings_internal.attnum_of(chunk_table, 'end_offset') IS NULL THEN
        PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS start_offset integer, '
                       'ADD COLUMN IF NOT EXISTS end_offset integer', chunk_table);
        PERFORM set_config('embeddings.following', 'off', true);
    END IF;
    IF embeddings_internal.attnum_of(chunk_table, 'headings') IS NULL OR embeddings_internal.attnum_of(chunk_table, 'page') IS NULL THEN
        PERFORM set_config('embeddings.following', 'on', true);
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS headings text[], '
                       'ADD COLUMN IF NOT EXISTS page integer', chunk_table);
        PERFORM set_config('embeddings.following', 'off', true);
    END IF;
END
$$;

-- watch()'s document format for a chunked target (docs/documents.md): `format` as given, else
-- the target's (`previous`), else 'auto' for a bytea column (detected from the bytes) and NULL
-- for text (plain text, chunked as it is). A PDF or DOCX is bytes: a text column (or a content
-- function) may hold HTML, Markdown or text only.
CREATE FUNCTION embeddings_internal.watch_document_format(source regclass, content_col name, content_type regtype,
                                                 format text, previous embeddings.targets) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    is_bytes boolean := content_col IS NOT NULL AND content_type = 'bytea'::regtype;
    chosen text := coalesce(watch_document_format.format, previous.document_format);
BEGIN
    IF watch_document_format.format IS NOT NULL
       AND watch_document_format.format NOT IN ('auto', 'pdf', 'docx', 'html', 'markdown', 'text') THEN
        RAISE EXCEPTION 'unknown document format %', quote_literal(watch_document_format.format)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The formats are pdf, docx, html, markdown and text (auto: detected from a bytea column''s bytes).';
    END IF;
    IF is_bytes THEN
        RETURN coalesce(chosen, 'auto');
    END IF;
    IF watch_document_format.format IN ('auto', 'pdf', 'docx') THEN
        RAISE EXCEPTION 'format => % needs a bytea content column: %', quote_literal(watch_document_format.format),
                CASE WHEN watch_document_format.format = 'auto' THEN 'only bytes are detected'
                     ELSE 'such a document is bytes, not text' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Keep the files in a bytea column of %s; a text column may hold html, markdown or text.', source);
    END IF;
    -- A text column after a bytea one: the bytes' formats do not carry over.
    RETURN CASE WHEN chosen IN ('html', 'markdown', 'text') THEN chosen END;
END
$$;

-- watch()'s context header template (docs/documents.md): as given, else the target's. Its
-- placeholders are {title} and {headings} only, without conversion or format spec; a brace is
-- written {{ or }} (the worker checks it the same way: worker/pipeline/documents/headers.py).
CREATE FUNCTION embeddings_internal.watch_context_header(template text, previous embeddings.targets) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad text;  -- the first brace group that is not a placeholder, or a lone brace
BEGIN
    IF template IS NULL THEN
        RETURN previous.context_header;
    END IF;
    IF length(template) > 1000 THEN
        RAISE EXCEPTION 'context_header is % characters long; at most 1000', length(template)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT m[1] INTO bad
    FROM regexp_matches(replace(replace(template, '{{', ''), '}}', ''), E'(\\{[^{}]*\\}|[{}])', 'g') AS m
    WHERE m[1] NOT IN ('{title}', '{headings}')
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'context_header %: %; its placeholders are {title} and {headings}, without a conversion or format; write a brace as {{ or }}',
                quote_literal(template),
                CASE WHEN bad IN ('{', '}') THEN format('an unmatched %s', bad)
                     ELSE format('%s is not a placeholder', bad) END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN template;
END
$$;

-- watch()'s checks of a chunked target's options (the overlap's default applied), after those of
-- every target (watch_check_plan()): chunk settings for a target that is not one of vectors per
-- row, chunk sizes the model can read, a context header only for documents, no title weight (a
-- chunk holds no title).
CREATE FUNCTION embeddings_internal.watch_check_chunks(o embeddings_internal.watch_options, previous embeddings.targets,
                                              document_format text, context_header text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_tokens integer := (SELECT m.max_tokens FROM embeddings.models m WHERE m.name = o.model);
BEGIN
    IF previous.id IS NOT NULL AND previous.store_kind IS DISTINCT FROM 'chunks' THEN
        RAISE EXCEPTION '%.% is watched with one vector per row, not in chunks', o.source, o.embedding_column
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Unwatch it first (SELECT embeddings.unwatch(%L)), or pass another embedding_column.', o.source::text);
    ELSIF o.chunk_tokens IS NULL AND previous.id IS NULL THEN
        RAISE EXCEPTION 'chunk_overlap and chunk_table need chunk_tokens' USING ERRCODE = 'invalid_parameter_value';
    ELSIF o.chunk_tokens IS NULL THEN
        RAISE EXCEPTION '% is watched in chunks of % tokens: pass chunk_tokens', o.source, previous.chunk_tokens
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'To keep one vector per row instead, unwatch it first.';
    END IF;
    IF context_header IS NOT NULL AND document_format IS NULL THEN
        RAISE EXCEPTION 'context_header is for documents: a bytea content column, or format => ''html'', ''markdown'' or ''text'''
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF o.chunk_tokens < 8 OR o.chunk_tokens > max_tokens - 2 THEN
        RAISE EXCEPTION 'chunk_tokens must be between 8 and % for model "%", not %', max_tokens - 2, o.model, o.chunk_tokens
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('The model reads %s tokens, two of them [CLS] and [SEP].', max_tokens);
    END IF;
    IF o.chunk_overlap < 0 OR o.chunk_overlap > o.chunk_tokens / 2 THEN
        RAISE EXCEPTION 'chunk_overlap must be between 0 and half of chunk_tokens (%), not %', o.chunk_tokens / 2, o.chunk_overlap
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF o.fts_title_weight IS NOT NULL THEN
        RAISE EXCEPTION 'fts_title_weight is for targets whose rows are embedded whole: a chunk holds no title'
            USING ERRCODE = 'feature_not_supported';
    END IF;
END
$$;

-- The chunk table of watch()'s chunked target, schema-qualified and quoted: chunk_table as given
-- (optionally schema-qualified), else the target's own (watched again after the table was
-- renamed or moved: its chunks stay where they are, as a side table's vectors do), else
-- <table>_chunks beside the source. Refused when it holds another target's chunks, and either
-- name past max_identifier_length.
CREATE FUNCTION embeddings_internal.watch_chunk_table(o embeddings_internal.watch_options, previous embeddings.targets)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    table_parts text[];
    part text;
    table_name text;
    name_bytes integer;
BEGIN
    IF o.chunk_table IS NULL AND previous.store_kind = 'chunks' THEN
        SELECT format('%I.%I', n.nspname, c.relname) INTO table_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = previous.store_table;
    ELSIF o.chunk_table IS NULL THEN
        SELECT format('%I.%I', n.nspname, c.relname || '_chunks'), pg_catalog.octet_length(c.relname || '_chunks')
        INTO table_name, name_bytes
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.source;
        -- (Postgres would cut it, to the table's own name for a name of 63 bytes)
        IF name_bytes > current_setting('max_identifier_length')::integer THEN
            RAISE EXCEPTION 'the chunk table''s name % is % bytes, over Postgres'' %', table_name, name_bytes,
                    current_setting('max_identifier_length')
                USING ERRCODE = 'name_too_long', HINT = 'Name the table with chunk_table => ''...''.';
        END IF;
    ELSE
        table_parts := parse_ident(o.chunk_table);
        table_name := CASE cardinality(table_parts)
            WHEN 1 THEN (SELECT format('%I.%I', n.nspname, table_parts[1])
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.source)
            WHEN 2 THEN format('%I.%I', table_parts[1], table_parts[2])
        END;
        IF table_name IS NULL THEN
            RAISE EXCEPTION 'invalid chunk_table "%": a table name, optionally schema-qualified', o.chunk_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- (Postgres would cut it to 63 bytes, silently: another table's name, or another schema's)
        FOREACH part IN ARRAY table_parts LOOP
            IF pg_catalog.octet_length(part) > current_setting('max_identifier_length')::integer THEN
                RAISE EXCEPTION 'chunk_table => %: the name % is % bytes, over Postgres'' %', quote_literal(o.chunk_table),
                        format('%I', part), pg_catalog.octet_length(part), current_setting('max_identifier_length')
                    USING ERRCODE = 'name_too_long',
                          HINT = 'Postgres would cut it to its first ' || current_setting('max_identifier_length')
                                 || ' bytes (max_identifier_length): name a shorter table (or schema).';
            END IF;
        END LOOP;
    END IF;
    IF EXISTS (SELECT FROM embeddings.targets tg
               WHERE tg.store_table = to_regclass(table_name) AND tg.id IS DISTINCT FROM previous.id) THEN
        RAISE EXCEPTION 'table % already holds the vectors of another target', table_name
            USING ERRCODE = 'duplicate_table', HINT = 'Name another table with chunk_table => ...';
    END IF;
    RETURN table_name;
END
$$;

-- watch()'s check of a chunked target `previous` keeping its chunk table `table_name` with a
-- model of `dims` dimensions: a chunk table's vector column has one dimension, and a chunked
-- target changes its model in place (no blue/green change: docs/model-changes.md), so a model
-- of another is refused, saying so and how to move the chunks to a new table for it (where
-- ensure_chunk_table() would call the target's own table "not a chunk table").
CREATE FUNCTION embeddings_internal.watch_check_chunk_dims(o embeddings_internal.watch_options, previous embeddings.targets,
                                                  table_name text, dims integer)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    held integer;
    moved text;
BEGIN
    IF previous.store_kind IS DISTINCT FROM 'chunks' OR previous.store_table IS DISTINCT FROM to_regclass(table_name) THEN
        RETURN;
    END IF;
    SELECT a.atttypmod INTO held FROM pg_attribute a
    WHERE a.attrelid = previous.store_table AND a.attname = o.embedding_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF held IS NULL OR held < 1 OR held = dims THEN
        RETURN;  -- (no such column, or no dimension: ensure_chunk_table() says what is wrong)
    END IF;
    -- The hint's table: beside the chunk table, named after it and the new dimension.
    SELECT CASE WHEN c.relnamespace = s.relnamespace THEN quote_ident(c.relname || '_' || dims)
                ELSE format('%I.%I', n.nspname, c.relname || '_' || dims) END INTO moved
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_class s
    WHERE c.oid = previous.store_table AND s.oid = o.source;
    RAISE EXCEPTION 'model % makes %-dimensional vectors, and the chunk table % of % holds %-dimensional ones',
            o.model, dims, embeddings_internal.display_name(previous.store_table), o.source, held
        USING ERRCODE = 'feature_not_supported',
              DETAIL = 'A chunked target changes its model in place, in its chunk table, whose vector column has one dimension.',
              HINT = format('Move its chunks to a new table for the new model: watch() again with chunk_table => %L. '
                            'Every document is embedded again into it (search finds only those done meanwhile); %s is kept, '
                            'no longer written: DROP TABLE it once the new one is filled (docs/model-changes.md).',
                            moved, embeddings_internal.display_name(previous.store_table));
END
$$;

-- watch()'s registration of a chunked target whose chunks are in `chunks`: a new row of
-- embeddings.targets (no embedding_attnum: the embedding column is in the chunk table), or
-- `previous` updated (a new version: in-flight writes under the old definition are rejected),
-- its pending jobs moved to another queue. `reembed`: every document again, since the content
-- source, the model or the chunk settings changed. Another model is a change in place: every
-- document is embedded again with it, so the chunk table is the new model's from now on (the
-- worker would otherwise refuse to mix the new model's vectors with the old one's, as it does
-- for a plain column).
CREATE FUNCTION embeddings_internal.watch_chunks_register(previous embeddings.targets, o embeddings_internal.watch_options,
                                                 plan embeddings_internal.watch_plan, chunks regclass,
                                                 document_format text, context_header text,
                                                 OUT t embeddings.targets, OUT reembed boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    reembed := false;
    IF previous.id IS NULL THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              queue, has_triggers, clear_on_update, key_columns, key_types,
                                              key_attnums, content_attnum, embedding_attnum, replica,
                                              store_kind, store_table, chunk_tokens, chunk_overlap, document_format, context_header)
        VALUES (o.source, o.embedding_column, plan.content_col, plan.content_fn, o.model,
                o.queue, o.triggers, false, plan.key_names, plan.key_types,
                plan.key_nums, plan.content_num, NULL, o.replica,
                'chunks', chunks, o.chunk_tokens, o.chunk_overlap, watch_chunks_register.document_format,
                watch_chunks_register.context_header)
        RETURNING * INTO t;
        RETURN;
    END IF;
    reembed := previous.content_column IS DISTINCT FROM plan.content_col
               OR previous.content_function IS DISTINCT FROM plan.content_fn
               OR previous.model <> o.model
               OR previous.chunk_tokens <> o.chunk_tokens
               OR previous.chunk_overlap <> o.chunk_overlap
               OR previous.store_table <> chunks
               OR previous.document_format IS DISTINCT FROM watch_chunks_register.document_format
               OR previous.context_header IS DISTINCT FROM watch_chunks_register.context_header;
    IF previous.queue <> o.queue THEN  -- both lanes' jobs, as a plain target's (40_watch.sql)
        PERFORM embeddings_internal.move_target_jobs(previous.id, previous.queue, o.queue);
    END IF;
    UPDATE embeddings.targets tg
    SET content_column = plan.content_col, content_function = plan.content_fn, model = o.model,
        key_columns = plan.key_names, key_types = plan.key_types, key_attnums = plan.key_nums,
        content_attnum = plan.content_num, embedding_attnum = NULL, replica = o.replica,
        problem = NULL, queue = o.queue, has_triggers = o.triggers, clear_on_update = false,
        store_table = chunks, chunk_tokens = o.chunk_tokens, chunk_overlap = o.chunk_overlap,
        document_format = watch_chunks_register.document_format,
        context_header = watch_chunks_register.context_header, updated_at = now(),
        version = tg.version + 1
    WHERE tg.id = previous.id
    RETURNING * INTO t;
    IF previous.model <> o.model THEN
        DELETE FROM embeddings.provenance p WHERE p.target_id = previous.id;
    END IF;
END
$$;

-- watch() of a chunked target, its plan checked (sql/40_watch.sql). Creates the chunk table,
-- registers the target, installs its triggers and queues the documents that have content and
-- no chunks (every document with content when the content source, the model or the chunk
-- settings changed); full-text search is on the chunk table. Returns the target id.
CREATE FUNCTION embeddings_internal.watch_chunked(o embeddings_internal.watch_options, plan embeddings_internal.watch_plan,
                                         previous embeddings.targets)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    document_format text;
    context_header text;
    table_name text;
    unchanged boolean;
    registered record;
    t embeddings.targets := previous;
BEGIN
    IF NOT o.backfill THEN
        RAISE EXCEPTION 'backfill => false is for plain targets; a chunked target embeds its existing rows'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    document_format := embeddings_internal.watch_document_format(o.source, plan.content_col, plan.content_type, o.format, previous);
    context_header := embeddings_internal.watch_context_header(o.context_header, previous);
    o.chunk_overlap := coalesce(o.chunk_overlap, o.chunk_tokens / 10);
    PERFORM embeddings_internal.watch_check_chunks(o, previous, document_format, context_header);
    table_name := embeddings_internal.watch_chunk_table(o, previous);
    PERFORM embeddings_internal.watch_check_chunk_dims(o, previous, table_name, plan.dims);

    unchanged := embeddings_internal.watch_same(o, plan, previous) AND previous.problem IS NULL
       AND previous.store_table = to_regclass(table_name)
       AND previous.chunk_tokens = o.chunk_tokens AND previous.chunk_overlap = o.chunk_overlap
       AND previous.document_format IS NOT DISTINCT FROM document_format
       AND previous.context_header IS NOT DISTINCT FROM context_header;
    IF NOT coalesce(unchanged, false) THEN
        PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
        PERFORM embeddings_internal.ensure_queue(o.queue);
        registered := embeddings_internal.watch_chunks_register(
            previous, o, plan,
            embeddings_internal.ensure_chunk_table(table_name, o.source, plan.key_names, plan.key_types, o.embedding_column, plan.dims),
            document_format, context_header);
        t := registered.t;
        PERFORM embeddings_internal.watch_install(t);  -- the generated functions chunk-aware (30_triggers.sql)
        -- Its documents, a backfill in key ranges (62_backfill.sql).
        PERFORM embeddings_internal.start_backfill(t, registered.reembed);
        PERFORM set_config('embeddings.following', 'off', true);
    END IF;
    -- A document's chunks are indexed with their heading paths (sql/59_hybrid.sql:
    -- headed_fts_sql()), which the column must follow; plain text's after it (it says why).
    IF document_format IS NOT NULL THEN
        PERFORM embeddings_internal.ensure_chunk_offsets(t.store_table);
    END IF;
    -- Another configuration, or the target's own on a chunk table without its column: a new
    -- one (chunk_table => another table), which search would otherwise read for a column it
    -- lacks; or of the other kind (documents, or plain text, since this call).
    IF (o.fts IS NOT NULL AND o.fts IS DISTINCT FROM t.fts_config)
       OR (t.fts_config IS NOT NULL AND embeddings_internal.attnum_of(t.store_table, t.fts_column) IS NULL)
       OR (t.fts_config IS NOT NULL AND embeddings_internal.fts_reads_headings(t.store_table, t.fts_column)
                                        IS DISTINCT FROM (document_format IS NOT NULL)) THEN
        PERFORM embeddings.enable_fts(o.source, coalesce(o.fts, t.fts_config), o.embedding_column);
    END IF;
    PERFORM embeddings_internal.ensure_chunk_offsets(t.store_table);  -- after the full-text column: it says why
    RETURN t.id;
END
$$;

-- The `k` chunks of `source`'s chunked target nearest to `query` (cosine distance), nearest
-- first: the retrieval step of a RAG app that embeds its question itself (the pattern of
-- Supabase's match_documents). `key` is the document's primary key as JSON (an array for a
-- composite key). k chunks whenever k match (embeddings.search() gives one per document).
-- pgvector's halfvec in the signature below, wherever pgvector is installed (public here,
-- `extensions` on Supabase): its schema is searched after pg_catalog while the function is
-- created, and only then (a type's name is unique in its schema; these statements call nothing).
SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident(embeddings.vector_schema()) || ', pg_temp', true);
CREATE FUNCTION embeddings.match_chunks(source regclass, query halfvec, k integer DEFAULT 10)
RETURNS TABLE (key jsonb, seq integer, chunk text, distance double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    nearest text;
    answer jsonb;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = match_chunks.source AND tg.store_kind = 'chunks'
    ORDER BY tg.id LIMIT 1;
    IF NOT FOUND THEN
        SELECT * INTO t FROM embeddings.targets tg  -- a chunk table itself: its target's table
        WHERE tg.store_table = match_chunks.source AND tg.source <> match_chunks.source AND tg.store_kind = 'chunks'
        ORDER BY tg.id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION '% is the chunk table of target %: pass %', embeddings_internal.display_name(source),
                    embeddings_internal.target_name(t),
                    embeddings_internal.display_name(t.source)
                USING ERRCODE = 'undefined_object',
                      HINT = format('SELECT * FROM embeddings.match_chunks(%L, ...) finds the chunks of its documents.',
                                    embeddings_internal.display_name(t.source));
        END IF;
        RAISE EXCEPTION '% is not watched in chunks', source
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT embeddings.watch(''<table>'', ''<content>'', chunk_tokens => 200) first.';
    END IF;
    IF k IS NULL OR k < 1 THEN  -- as search()
        RAISE EXCEPTION 'embeddings.match_chunks: k must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'embeddings.match_chunks: query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Through the target's embeddings_<id>_nearest() (sql/58_search.sql): with the caller's
    -- rights, the chunks of documents it may see; an iterative index scan, and an exact one
    -- when the index yields fewer than k.
    nearest := format('embeddings.%I', 'embeddings_' || t.id || '_nearest');
    IF to_regproc(nearest) IS NULL THEN
        RAISE EXCEPTION 'embeddings: the search function of % is missing%', t.source, coalesce(' (' || t.problem || ')', '')
            USING ERRCODE = 'undefined_function',
                  HINT = 'An ALTER TABLE of it, or watch() again, regenerates it.';
    END IF;
    answer := embeddings_internal.search_run(format('SELECT * FROM %s($1, %s, false)', nearest, k), query, NULL);
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);  -- (search_run() says why)
    IF jsonb_array_length(answer) < k THEN
        answer := embeddings_internal.search_run(format('SELECT * FROM %s($1, %s, true)', nearest, k), query, NULL);
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    END IF;
    RETURN QUERY
        SELECT r.value->'key', (r.value->>'seq')::integer, r.value->>'content', (r.value->>'distance')::double precision
        FROM jsonb_array_elements(answer) WITH ORDINALITY AS r(value, i) ORDER BY r.i;
END
$$;
COMMENT ON FUNCTION embeddings.match_chunks IS
    'The k chunks of a chunked table nearest to a query vector, each with its document''s key and text. Reads with the caller''s rights.';
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

-- embeddings.documents (state/55_chunks.sql) with each target's name, for status and doctor: documents in progress
-- (chunks done of estimated), documents over the ceiling, a problem that stops a document's
-- progress until the ceiling is raised or the document shortened, and documents with no text,
-- settled without a chunk.
CREATE VIEW embeddings.document_progress AS
SELECT d.target_id, embeddings_internal.target_name(t) AS target, d.row_key, d.state, d.bytes,
       d.chunks_done, greatest(d.chunks_estimated, d.chunks_done) AS chunks_estimated,
       d.ceiling_bytes, d.started_at, d.updated_at
FROM embeddings.documents d JOIN embeddings.targets t ON t.id = d.target_id;
COMMENT ON VIEW embeddings.document_progress IS 'Long documents of chunked targets embedded in pieces, over the ceiling or with no text: state, size, chunks done of how many, since when';

-- The chunks store's operations (sql/54_stores.sql lists them) --------------------------------

-- A document lacks its vectors while it has no chunk.
CREATE FUNCTION embeddings_internal.chunks_store_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('NOT EXISTS (SELECT FROM %(store)s c WHERE %(same_key)s)',
                             jsonb_build_object('store', t.store_table::text, 'same_key', embeddings_internal.key_equal_sql(t, alias, 'c')))
$$;

-- Blank content: the chunk write deletes the document's chunks (its count is 0), no scan needed.
CREATE FUNCTION embeddings_internal.chunks_store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT NULL::text
$$;

-- A chunked target's functions that read and write its chunk table, as the table's owner
-- (access_spec()s, sql/32_access.sql; search runs with the caller's rights: sql/58_search.sql):
-- vectors to reuse, the chunk write, and following the table's deletes and truncations.
CREATE FUNCTION embeddings_internal.chunks_store_access(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vectors text := to_regtype(quote_ident(embeddings.vector_schema()) || '.halfvec')::text || '[]';
    args jsonb := jsonb_build_object(
        'vector', t.embedding_column,
        'chunk_match', embeddings_internal.access_match_sql(t, 'c'),
        'key_values', embeddings_internal.render_each('(v.k%(n)s)::%(type)s',
                                             (SELECT jsonb_agg(jsonb_build_object('n', i - 1, 'type', (embeddings_internal.key_sql_types(t))[i]) ORDER BY i)
                                              FROM generate_series(1, cardinality(t.key_columns)) i), ', '));
BEGIN
    -- Vectors stored for chunks of these documents with these hashes (the chunks an edit left
    -- unchanged), as real[] (the worker's loading connection needs no pgvector types). The key
    -- arrays repeat each document's key, once per chunk hash.
    RETURN NEXT embeddings_internal.access_spec('_reusable', ARRAY['keys text[]'] || embeddings_internal.key_params(t) || ARRAY['hashes text[]'],
        'TABLE (key text, chunk_hash text, embedding real[])', $template$
        RETURN QUERY
            SELECT DISTINCT ON (v.key, c.chunk_hash) v.key, c.chunk_hash, (c.%(vector)I)::real[]
            FROM ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.hashes)) AS v(key%(key_aliases)s, hash)
            JOIN %(store)s c ON %(chunk_match)s AND c.chunk_hash OPERATOR(pg_catalog.=) v.hash;
        $template$, args, stable => true);

    -- The chunk write, for documents whose content is still the one loaded (the md5 `digests`;
    -- the caller ordered itself after their other writers: embeddings_internal.lock_documents()):
    -- upserts their chunks (a chunk whose hash is unchanged at its position is left as it is)
    -- and deletes those past each document's `counts` (all of them for 0: blank content).
    -- Chunks name their document by its canonical key (`chunk_keys`); `starts` and `ends` are
    -- their character offsets in it (an unchanged chunk that moved in its document gets its new
    -- ones, its vector kept); `headings` (a JSON array of heading paths, NULL for plain text)
    -- and `pages` a document's chunks' heading path and PDF page (NULL: none). Returns, per
    -- document, whether it was current and lost chunks. The chunk table's key columns are named
    -- as the source's, and may be named as a parameter (k0, keys, ...): ON CONFLICT names
    -- columns (#variable_conflict use_column), and the variables are qualified.
    RETURN NEXT embeddings_internal.access_spec('_chunks',
        ARRAY['keys text[]'] || embeddings_internal.key_params(t)
        || ARRAY['digests text[]', 'counts integer[]', 'chunk_keys text[]', 'seqs integer[]', 'chunks text[]',
                 'hashes text[]', 'vectors ' || vectors, 'starts integer[]', 'ends integer[]', 'headings jsonb', 'pages integer[]'],
        'TABLE (key text, is_current boolean, trimmed boolean)', $template$
        current_keys := ARRAY(
            SELECT v.key FROM ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.digests)) AS v(key%(key_aliases)s, h)
            JOIN %(source)s t ON %(key_match)s
            WHERE CASE WHEN v.h IS NULL THEN pg_catalog.md5(%(content)s) IS NULL ELSE pg_catalog.md5(%(content)s) OPERATOR(pg_catalog.=) v.h END);
        INSERT INTO %(store)s AS c (%(key_columns)s, seq, chunk, chunk_hash, %(vector)I, start_offset, end_offset, headings, page)
        SELECT %(key_values)s, x.seq, x.chunk, x.hash, x.e, x.start_offset, x.end_offset,
               CASE WHEN pg_catalog.jsonb_typeof(x.h) OPERATOR(pg_catalog.=) 'array'
                    THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(x.h)) END, x.page
        FROM ROWS FROM (pg_catalog.unnest(%(fn)I.chunk_keys), pg_catalog.unnest(%(fn)I.seqs), pg_catalog.unnest(%(fn)I.chunks),
                        pg_catalog.unnest(%(fn)I.hashes), pg_catalog.unnest(%(fn)I.vectors), pg_catalog.unnest(%(fn)I.starts),
                        pg_catalog.unnest(%(fn)I.ends), pg_catalog.jsonb_array_elements(%(fn)I.headings),
                        pg_catalog.unnest(%(fn)I.pages)) AS x(key, seq, chunk, hash, e, start_offset, end_offset, h, page)
        JOIN ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s) ON v.key OPERATOR(pg_catalog.=) x.key
        WHERE x.key OPERATOR(pg_catalog.=) ANY (chunk_write.current_keys)
        ON CONFLICT (%(key_columns)s, seq) DO UPDATE
        SET chunk = excluded.chunk, chunk_hash = excluded.chunk_hash, %(vector)I = excluded.%(vector)I,
            start_offset = excluded.start_offset, end_offset = excluded.end_offset,
            headings = excluded.headings, page = excluded.page
        WHERE NOT (coalesce(c.chunk_hash OPERATOR(pg_catalog.=) excluded.chunk_hash, false)
                   AND coalesce(c.start_offset OPERATOR(pg_catalog.=) excluded.start_offset,
                                c.start_offset IS NULL AND excluded.start_offset IS NULL)
                   AND coalesce(c.end_offset OPERATOR(pg_catalog.=) excluded.end_offset,
                                c.end_offset IS NULL AND excluded.end_offset IS NULL)
                   AND coalesce(c.headings OPERATOR(pg_catalog.=) excluded.headings,
                                c.headings IS NULL AND excluded.headings IS NULL)
                   AND coalesce(c.page OPERATOR(pg_catalog.=) excluded.page,
                                c.page IS NULL AND excluded.page IS NULL));
        WITH gone AS (
            DELETE FROM %(store)s c USING ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.counts)) AS v(key%(key_aliases)s, n)
            WHERE %(chunk_match)s AND c.seq OPERATOR(pg_catalog.>=) v.n AND v.key OPERATOR(pg_catalog.=) ANY (chunk_write.current_keys)
            RETURNING v.key)
        SELECT pg_catalog.array_agg(DISTINCT g.key) INTO trimmed_keys FROM gone g;
        RETURN QUERY
            SELECT d.key, d.key OPERATOR(pg_catalog.=) ANY (chunk_write.current_keys),
                   coalesce(d.key OPERATOR(pg_catalog.=) ANY (chunk_write.trimmed_keys), false)
            FROM pg_catalog.unnest(%(fn)I.keys) AS d(key);
        $template$, args,
        declare => E'#variable_conflict use_column\n<<chunk_write>>\nDECLARE\n    current_keys text[];\n    trimmed_keys text[];\n');
    RETURN NEXT embeddings_internal.access_code_spec('embeddings_' || t.id || '_chunks', embeddings_internal.chunks_store_compat_code(t));
    RETURN QUERY SELECT * FROM embeddings_internal.follow_access(t);  -- deletes and truncations (sql/54_stores.sql)
END
$$;

-- The chunk write as release 0.2.0's worker calls it (no offsets, headings or pages), for a
-- rolling upgrade: a 0.2.0 worker still running after `migrate` writes its chunks through this,
-- with their offsets NULL as a chunk from before the upgrade has them (the next write of the
-- document fills them in), ordered after the new workers' writers of the same documents (it
-- orders itself with advisory locks, which they no longer take). Ours, run as the caller (a
-- worker role), as a guard is: the table's owner cannot redefine it (chunks_store_access()).
CREATE FUNCTION embeddings_internal.chunks_store_compat_code(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render($template$
        CREATE FUNCTION embeddings.%(name)I(keys text[]%(key_params)s, digests text[], counts integer[], chunk_keys text[],
                                           seqs integer[], chunks text[], hashes text[], vectors %(vectors)s)
        RETURNS TABLE (key text, is_current boolean, trimmed boolean)
        LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            PERFORM embeddings_internal.lock_documents(%(id)s, %(name)I.keys);
            RETURN QUERY SELECT * FROM embeddings.%(name)I(%(args)s, NULL::integer[], NULL::integer[], NULL::jsonb, NULL::integer[]);
        END
        $body$
        $template$, jsonb_build_object(
            'name', 'embeddings_' || t.id || '_chunks', 'id', t.id,
            'key_params', coalesce(', ' || array_to_string(embeddings_internal.key_params(t), ', '), ''),
            'vectors', to_regtype(quote_ident(embeddings.vector_schema()) || '.halfvec')::text || '[]',
            'args', embeddings_internal.render_each('%(fn)I.%(param)I',
                                           (SELECT jsonb_agg(jsonb_build_object('param', p) ORDER BY i)
                                            FROM unnest(ARRAY['keys'] || ARRAY(SELECT 'k' || (g - 1) FROM generate_series(1, cardinality(t.key_columns)) g ORDER BY g)
                                                        || ARRAY['digests', 'counts', 'chunk_keys', 'seqs', 'chunks', 'hashes', 'vectors'])
                                                 WITH ORDINALITY AS u(p, i)),
                                           ', ', jsonb_build_object('fn', 'embeddings_' || t.id || '_chunks'))))
$$;

-- A chunked target's search: its chunk table `c` joined to the table, a row per chunk.
CREATE FUNCTION embeddings_internal.chunks_store_search_sql(t embeddings.targets) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'from', embeddings_internal.render('%(store)s c JOIN %(source)s s ON %(same_key)s', a.args),
        'store', 'c',
        'vector', embeddings_internal.render('c.%(vector)I', a.args),
        'key', embeddings_internal.key_json_sql(t, 'c'),
        'key_alias', 'c',
        'content', 'c.chunk',
        'seq', 'c.seq',
        'start_offset', 'c.start_offset',
        'end_offset', 'c.end_offset',
        'headings', 'c.headings',
        'page', 'c.page',
        'order', embeddings_internal.render('c.%(vector)I OPERATOR(%(vector_schema)I.<=>) $1', a.args),
        'distance', embeddings_internal.render('(c.%(vector)I OPERATOR(%(vector_schema)I.<=>) $1)::double precision', a.args))
    FROM (SELECT jsonb_build_object('store', t.store_table::text, 'source', t.source::text,
                                    'same_key', embeddings_internal.key_equal_sql(t, 'c', 's'),
                                    'vector', t.embedding_column, 'vector_schema', embeddings.vector_schema())) a(args)
$$;

-- Status's exact counts: the table's rows and those with blank content; embedded rows are its
-- documents with chunks, and the chunks of documents that exist (a delete not yet followed up
-- leaves some behind).
CREATE FUNCTION embeddings_internal.chunks_store_exact_counts(t embeddings.targets,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE embeddings_internal.render('SELECT count(*), %(cleared)s FROM %(source)s s',
                              jsonb_build_object('cleared', embeddings_internal.cleared_count_sql(t), 'source', t.source::text))
        INTO total_rows, cleared_rows;
    EXECUTE embeddings_internal.render('SELECT count(*), coalesce(sum(n), 0)::bigint FROM (SELECT count(*) AS n FROM %(store)s c '
                              'WHERE EXISTS (SELECT FROM %(source)s s WHERE %(same_key)s) GROUP BY %(keys)s) d',
                              jsonb_build_object('store', t.store_table::text, 'source', t.source::text,
                                                 'same_key', embeddings_internal.key_equal_sql(t, 's', 'c'),
                                                 'keys', embeddings_internal.render_each('%(column)I', (SELECT jsonb_agg(jsonb_build_object('column', k))
                                                                                               FROM unnest(t.key_columns) AS k), ', ')))
        INTO embedded_rows, chunks;
EXCEPTION WHEN OTHERS THEN  -- the chunk table is gone
    embedded_rows := NULL;
    chunks := NULL;
END
$$;

-- Status's estimates: documents with chunks are not estimated (NULL); the chunks are the chunk
-- table's rows.
CREATE FUNCTION embeddings_internal.chunks_store_estimated_vectors(t embeddings.targets,
    OUT embedded double precision, OUT chunks double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT NULL::double precision, sum(embeddings_internal.estimated_rows(cl)) FROM embeddings_internal.leaf_relations(t.store_table) AS cl
$$;
