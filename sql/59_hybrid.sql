-- Hybrid search: full-text and vector rankings fused by their scores (or by reciprocal rank
-- fusion, RRF, on request: hybrid_search() below), for targets with full-text search on (embeddings.watch(..., fts => 'english') or
-- embeddings.enable_fts()). Exact terms (names, codes, error messages) are where small dense
-- models are weakest and full-text search strongest; paraphrases the other way round
-- (docs/retrieval-quality.md has the numbers).
--
-- The tsvector: for a plain target, column `fts_column` of the table (default
-- <embedding column>_fts), written by the worker with each vector through the table owner's
-- store function (sql/32_access.sql), so the application's own writes compute nothing more.
-- Both rankings take only rows with a vector: a row whose content changed (its vector cleared
-- by the trigger, its tsvector not yet rewritten) is found by neither until embedded again.
-- For a side-table target, the same column in the side table, written with the vector by the
-- side store function (sql/56_side.sql): a content change leaves both as they were until the
-- worker writes the new ones. For a chunked target, column `fts` of the chunk table, generated
-- from the chunk (that table is written by the worker only). All GIN-indexed. Dots between word
-- characters are read as spaces, in content and queries alike: Postgres's parser takes a
-- dotted name (`urllib.request.urlopen`) as one token, which a search for `urlopen` would
-- never match.

-- The tsvector of text expression `expr` with configuration `config`, dots split.
CREATE FUNCTION embeddings_internal.plain_fts_sql(config regconfig, expr text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('pg_catalog.to_tsvector(%L::pg_catalog.regconfig, pg_catalog.regexp_replace(%s, %L, %L, ''g''))',
                  config::text, expr, E'(\\w)\\.(?=\\w)', E'\\1 ')
$$;

-- The every-word query of text expression `expr` with configuration `config`, as
-- fts_ranking_sql() (below) says: websearch_to_tsquery() with dots split, a lower-case "or" a
-- word and a "-" touching no word a space. Also what the BM25 ranking (sql/59_bm25.sql) tells
-- its rows holding every word by.
CREATE FUNCTION embeddings_internal.every_word_query_sql(config regconfig, expr text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('pg_catalog.websearch_to_tsquery(%L::pg_catalog.regconfig,'
                  ' pg_catalog.regexp_replace(pg_catalog.regexp_replace('
                  '  pg_catalog.regexp_replace(%s, %L, %L, ''g''), %L, %L, ''g''),'
                  '  %L, '' '', ''g''))',
                  config::text, expr, E'(\\w)\\.(?=\\w)', E'\\1 ', E'\\m(or|Or|oR)\\M', E'\\1_', E'-(?=[-\\s!&|()<]|$)')
$$;

-- A question in websearch syntax with each term given again left out: a word, a -word or a
-- "quoted phrase" (in any case) seen before between the same two ORs, and a run of terms
-- between two ORs seen before, in any order (with its OR). The query is the same (x AND x is x, X OR X is
-- X), and far cheaper to rank: "a b" 32 times was 32 phrases, each scored by ts_rank_cd in
-- every row (about 2 s on 2,000 rows). Read as every_word_query_sql() reads it: only OR in
-- capitals is the operator, and only between terms (first, last or doubled it is a word: the
-- question is left as it is); a "-" touching no word is a space (left out); a quoted phrase
-- ends at the next `"` or at the end. The question as it is when nothing is left out. Only its
-- first 4,096 terms are read (fulltext_words() keeps 64 words; a question's keywords come
-- first): a 1 MiB question costs its split and sorts of 4,096 terms (0.4-0.5 s, as before this
-- function), not sorts of its 175,000 (1.5-1.7 s). PL/pgSQL for its plan, kept between calls.
CREATE FUNCTION embeddings_internal.websearch_distinct(question text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (WITH found AS (  -- the terms and ORs, in order
        SELECT m.i, m.found[1] AS term, m.found[1] = 'OR' AS op
        FROM (SELECT * FROM regexp_matches(question, E'-?"[^"]*(?:"|$)|[^\\s"]+', 'g') WITH ORDINALITY AS m(found, i)
              LIMIT 4096) m
        WHERE m.found[1] !~ '^-+$'
    ), terms AS (  -- each with its OR-group (the ORs before it); the first of its kind there
        SELECT t.*, t.op OR t.i = min(t.i) OVER (PARTITION BY t.grp, t.op, lower(t.term)) AS first
        FROM (SELECT f.*, count(*) FILTER (WHERE f.op) OVER (ORDER BY f.i) AS grp,
                     f.op AND (lag(f.op) OVER (ORDER BY f.i) IS NOT FALSE
                               OR lead(f.op) OVER (ORDER BY f.i) IS NOT FALSE) AS word_or
              FROM found f) t
    ), groups AS (  -- each OR-group's terms, those given again left out; the first such group
        SELECT g.*, g.grp = min(g.grp) OVER (PARTITION BY g.same) AS first
        FROM (SELECT tr.grp, string_agg(tr.term, ' ' ORDER BY tr.i) FILTER (WHERE NOT tr.op AND tr.first) AS kept,
                     array_agg(lower(tr.term) ORDER BY lower(tr.term)) FILTER (WHERE NOT tr.op AND tr.first) AS same,
                     bool_or(NOT tr.first) AS dropped, bool_or(tr.word_or) AS word_or
              FROM terms tr GROUP BY tr.grp) g
    )
    SELECT CASE WHEN bool_or(gr.dropped OR NOT gr.first) AND NOT bool_or(gr.word_or)
                THEN string_agg(CASE WHEN gr.grp > 0 THEN 'OR ' ELSE '' END || gr.kept, ' ' ORDER BY gr.grp) FILTER (WHERE gr.first)
                ELSE question END
    FROM groups gr);
END
$$;

-- The words of hybrid search's question that its full-text side reads (docs/sql.md): the first
-- 64 runs of characters between white space; in a question without websearch syntax (no `"`,
-- no word "or", no word starting with "-") a word seen before (in any case) is left out first,
-- in one with it a term (websearch_distinct()).
-- The every-word query is a tree with an AND per word: 20,000 words overflowed the stack, and
-- "password reset" 8,000 times kept a backend ranking for 35 s (ts_rank_cd of an every-word
-- query of 16,000 items); a question's keywords fit in 64 words, and the vector side reads the
-- model's first 512 tokens alike. Linear in the question (1 MiB, POST /search's bound: 0.1 s).
CREATE FUNCTION embeddings_internal.fulltext_words(question text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once (in the statement below, once a word: quadratic in the question).
    syntax boolean := question ~ E'"|(^|\\s)-|(^|\\s)[oO][rR](\\s|$)';
BEGIN
    IF syntax THEN
        question := embeddings_internal.websearch_distinct(question);
    END IF;
    RETURN (
        SELECT coalesce(string_agg(w.word, ' ' ORDER BY w.i), '')
        FROM (SELECT k.word, k.i, row_number() OVER (ORDER BY k.i) AS n
              FROM (SELECT s.word, s.i, s.i = min(s.i) OVER (PARTITION BY lower(s.word)) AS first
                    FROM pg_catalog.regexp_split_to_table(question, E'\\s+') WITH ORDINALITY AS s(word, i)
                    WHERE s.word <> '') k
              WHERE k.first OR syntax) w
        WHERE w.n <= 64);
END
$$;

-- Fields: a content whose text holds U+001F (the unit separator, chr(31)) is a title (the
-- text before the first one) and a body (the rest). Its tsvector: the title's words weighted
-- A, then the body's (weight D, their places after the title's, as in one text). Without the
-- separator, all body. The vector side embeds the text with the separator read as a space
-- (the worker's load stage), so `title || chr(31) || body` embeds as `title || ' ' || body`.
CREATE FUNCTION embeddings_internal.fields_tsvector(config regconfig, content text) RETURNS tsvector
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_catalog.strpos(content, pg_catalog.chr(31)) = 0
                THEN pg_catalog.to_tsvector(config, pg_catalog.regexp_replace(content, E'(\\w)\\.(?=\\w)', E'\\1 ', 'g'))
                ELSE pg_catalog.setweight(pg_catalog.to_tsvector(config, pg_catalog.regexp_replace(pg_catalog.split_part(content, pg_catalog.chr(31), 1), E'(\\w)\\.(?=\\w)', E'\\1 ', 'g')), 'A')
                     || pg_catalog.to_tsvector(config, pg_catalog.regexp_replace(pg_catalog.substr(content, pg_catalog.strpos(content, pg_catalog.chr(31)) + 1), E'(\\w)\\.(?=\\w)', E'\\1 ', 'g')) END
$$;

-- The tsvector of a document's chunk (a chunked target with a document format: its chunk
-- table's generated column), `expr` its text: the words of its heading path (column
-- `headings`) weighted A, then the chunk's (D, their places after the headings', as in one
-- text), so that a search for a section's title finds its chunks, whose text seldom repeats
-- it, and ts_rank_cd() ranks a heading's word above a word of the text. A chunk without a
-- heading (plain text, a PDF's) gets plain_fts_sql()'s. Built-in functions only: a generated
-- column that called one of ours would hang on the code every upgrade drops and installs
-- again (worker/schema/code.py), and array_to_string() is not immutable, so the path is
-- joined element by element: its first 9 headings, as deep as the worker makes a path
-- (worker/pipeline/documents/extracted.py: MAX_DEPTH, checked for a parse's answer too).
CREATE FUNCTION embeddings_internal.headed_fts_sql(config regconfig, expr text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('CASE WHEN pg_catalog.cardinality(headings) OPERATOR(pg_catalog.>) 0'
                  ' THEN pg_catalog.setweight(%s, ''A'') OPERATOR(pg_catalog.||) %s ELSE %2$s END',
                  embeddings_internal.plain_fts_sql(config, string_agg(format('coalesce(headings[%s], '''')', i),
                                                                       ' OPERATOR(pg_catalog.||) '' '' OPERATOR(pg_catalog.||) ' ORDER BY i)),
                  embeddings_internal.plain_fts_sql(config, expr))
    FROM generate_series(1, 9) AS i
$$;

-- Whether chunk table `rel`'s tsvector column `col` is headed_fts_sql()'s: its generation
-- expression reads column `headings` (Postgres records which columns it reads).
CREATE FUNCTION embeddings_internal.fts_reads_headings(rel regclass, col name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT FROM pg_attrdef d JOIN pg_depend p ON p.classid = 'pg_attrdef'::regclass AND p.objid = d.oid
        WHERE d.adrelid = rel AND d.adnum = embeddings_internal.attnum_of(rel, col)
          AND p.refclassid = 'pg_class'::regclass AND p.refobjid = rel
          AND p.refobjsubid = embeddings_internal.attnum_of(rel, 'headings'))
$$;

-- The tsvector of target t's content, text expression `expr` (NULL when t has no full-text
-- search): with fields (fts_title_weight), fields_tsvector()'s; a chunked target's chunks are
-- one field, a document's with its heading path (headed_fts_sql()). It reads the content's
-- first 1,048,576 characters (docs/sql.md, enable_fts): its
-- vector reads the model's first 512 tokens, a long document is chunked, and to_tsvector() of
-- a whole multi-megabyte row took longer than the store's UPDATE may (that of the table
-- owner's triggers: 6.75 MB failed every attempt, its error naming the owner's code) or
-- overflowed a tsvector's 1 MB.
CREATE FUNCTION embeddings_internal.fts_sql(t embeddings.targets, expr text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN t.fts_config IS NULL THEN NULL
                WHEN t.fts_title_weight IS NOT NULL AND NOT embeddings_internal.store_has_chunks(t)
                THEN format('embeddings_internal.fields_tsvector(%L::pg_catalog.regconfig, pg_catalog.left(%s, 1048576))',
                            t.fts_config::text, expr)
                WHEN embeddings_internal.store_has_chunks(t) AND t.document_format IS NOT NULL
                THEN embeddings_internal.headed_fts_sql(t.fts_config, expr)
                WHEN embeddings_internal.store_has_chunks(t)  -- (a chunk: a few hundred tokens)
                THEN embeddings_internal.plain_fts_sql(t.fts_config, expr)
                ELSE embeddings_internal.plain_fts_sql(t.fts_config, format('pg_catalog.left(%s, 1048576)', expr)) END
$$;

-- The assignment the store function adds to its UPDATE for target t's tsvector (`value` the
-- content, or NULL to clear it); '' without full-text search or for a chunked target.
CREATE FUNCTION embeddings_internal.fts_assign_sql(t embeddings.targets, value text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN t.fts_config IS NULL OR embeddings_internal.store_has_chunks(t) OR t.fts_column IS NULL THEN ''
                WHEN value IS NULL THEN format(', %I = NULL', t.fts_column)
                ELSE format(', %I = %s', t.fts_column, embeddings_internal.fts_sql(t, value)) END
$$;

-- The pgvector indexes (HNSW, IVFFlat) of table `rel` on plain columns (no expression, no
-- predicate), each with the statements that make it again as it is: its definition, its
-- tablespace, its comment.
CREATE FUNCTION embeddings_internal.vector_indexes(rel regclass) RETURNS TABLE (index regclass, statements text[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.indexrelid::regclass,
           ARRAY[pg_get_indexdef(i.indexrelid)
                 || coalesce(' TABLESPACE ' || quote_ident((SELECT sp.spcname FROM pg_tablespace sp
                                                            WHERE sp.oid = c.reltablespace)), '')]
           || coalesce(ARRAY[format('COMMENT ON INDEX %s IS %L', i.indexrelid::regclass,
                                    obj_description(i.indexrelid, 'pg_class'))], '{}')
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
    WHERE i.indrelid = rel AND am.amname IN ('hnsw', 'ivfflat') AND i.indexprs IS NULL
      AND i.indpred IS NULL AND i.indisvalid
    ORDER BY i.indexrelid
$$;

-- Turns full-text search on for `source`'s target (of `embedding_column`, when it has several)
-- with text search configuration `config`: the tsvector column and its GIN index, filled for
-- the rows embedded already, and the store function regenerated to keep it. Run by the table's
-- owner (it alters the table). Again with another configuration: rebuilt with that one.
-- In one transaction, holding the table (or side table, or chunk table) ACCESS EXCLUSIVE
-- throughout: reads of it wait until it is done (docs/rag.md: minutes for a large table).
-- The fill writes a new version of every embedded row (of a chunk table: the whole table is
-- rewritten, as ADD COLUMN of a generated column does), and every new row version goes into
-- each index of the table: into an HNSW index that costs a search of the graph per row (over
-- 20 minutes for 100,000 rows on 2 cores), a build from scratch several times less. So the
-- pgvector indexes of the table (or side table) are dropped before the fill and built again
-- after it from their own definitions, unseen by anyone (the lock), as a rewrite rebuilds the
-- chunk table's. A partitioned table keeps them (its indexes are per partition): slower.
-- `title_weight`: fields (fields_tsvector() above), the title's words counted this many times
-- in BM25's term frequency (at least 1); NULL: one field.
CREATE FUNCTION embeddings.enable_fts(source regclass, config regconfig DEFAULT 'english',
                                      embedding_column name DEFAULT NULL,
                                      title_weight double precision DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets := embeddings_internal.search_target(source, embedding_column);
    a jsonb := embeddings_internal.access_parts(t);
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source);
    fill text := (a->>'prefix') || '_fill_fts';
    col name;
    rel regclass;
    rebuild text[] := '{}';
    dropped regclass;
    statement text;
BEGIN
    -- (else the column's generated expression is no SQL: a syntax error quoting all of it)
    IF config IS NULL THEN
        RAISE EXCEPTION 'embeddings.enable_fts(): config must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name a text search configuration, e.g. ''english'' (pg_catalog.pg_ts_config lists them); disable_fts() turns full-text search off.';
    END IF;
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    -- The tsvector beside the vectors: a generated column `fts` of a chunk table, else kept
    -- by the store function in the table or its side table.
    rel := t.store_table;
    col := CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'fts' ELSE embeddings_internal.suffixed_name(t.embedding_column, '_fts') END;
    IF t.fts_column IS NOT NULL OR embeddings_internal.attnum_of(rel, col) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN IF EXISTS %I', rel, coalesce(t.fts_column, col));
    END IF;
    IF title_weight IS NOT NULL AND NOT title_weight >= 1 THEN
        RAISE EXCEPTION 'embeddings.enable_fts: title_weight is at least 1 (NULL: no fields), not %', title_weight
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE embeddings.targets tg SET fts_config = config, fts_column = col, fts_title_weight = title_weight,
                                     updated_at = now()
    WHERE tg.id = t.id RETURNING * INTO t;
    IF embeddings_internal.store_has_chunks(t) THEN
        IF t.document_format IS NOT NULL THEN  -- (the column reads the chunks' heading paths)
            PERFORM embeddings_internal.ensure_chunk_offsets(rel);
        END IF;
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I tsvector GENERATED ALWAYS AS (%s) STORED',
                       rel, col, embeddings_internal.fts_sql(t, 'chunk'));
    ELSE
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I tsvector', rel, col);
        -- The rows embedded already (the rest get theirs with their vectors), through a
        -- function of the table's owner, as the store function is: the content (a content
        -- function's, say) is evaluated and the table's triggers fire as the owner, never as
        -- us. Only this column changes: no job is queued, no vector cleared.
        PERFORM embeddings_internal.create_access_function(a, '_fill_fts', '', 'void',
            CASE WHEN rel = t.source
                 THEN format('UPDATE %s t SET %I = %s WHERE t.%I IS NOT NULL;',
                             rel, col, embeddings_internal.fts_sql(t, a->>'content'), t.embedding_column)
                 -- A side row's tsvector from its row's content (the table named first, as
                 -- everywhere: sql/56_side.sql says why).
                 ELSE format('UPDATE %s x SET %I = %s FROM %s t WHERE %s;',
                             rel, col, embeddings_internal.fts_sql(t, a->>'content'), t.source,
                             embeddings_internal.key_equal_sql(t, 't', 'x')) END);
        -- (Its body `<fill>_body` runs the owner's code with the owner's path; `<fill>`, the
        -- guard, puts back what that code left in our session: create_access_function().)
        PERFORM embeddings_internal.give_owner_path(format('embeddings.%I()', fill || '_body')::regprocedure,
                                           (SELECT c.relowner FROM pg_class c WHERE c.oid = t.source));
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I(), embeddings.%I() FROM PUBLIC', fill, fill || '_body');
        IF owner_name <> current_user THEN
            EXECUTE format('ALTER FUNCTION embeddings.%I() OWNER TO %I', fill || '_body', owner_name);
            EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.%I() TO %I', fill || '_body', current_user);
        END IF;
        IF (SELECT c.relkind FROM pg_class c WHERE c.oid = rel) = 'r' THEN
            FOR dropped, statement IN
                SELECT v.index, array_to_string(v.statements, '; ') FROM embeddings_internal.vector_indexes(rel) v
            LOOP
                rebuild := rebuild || statement;
                EXECUTE format('DROP INDEX %s', dropped);
            END LOOP;
        END IF;
        EXECUTE format('SELECT embeddings.%I()', fill);
        EXECUTE format('DROP FUNCTION embeddings.%I(), embeddings.%I()', fill, fill || '_body');
        FOREACH statement IN ARRAY rebuild LOOP
            EXECUTE statement;
        END LOOP;
    END IF;
    EXECUTE format('CREATE INDEX ON %s USING gin (%I)', rel, col);
    PERFORM embeddings_internal.generate_access(t);
    PERFORM set_config('embeddings.following', 'off', true);
END
$$;
COMMENT ON FUNCTION embeddings.enable_fts IS
    'Turns full-text search on for a target (a tsvector column and its GIN index), for hybrid_search(). Schema owner only.';

-- Turns full-text search off for `source`'s target: drops the tsvector column.
CREATE FUNCTION embeddings.disable_fts(source regclass, embedding_column name DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets := embeddings_internal.search_target(source, embedding_column);
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);
    IF t.fts_column IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN IF EXISTS %I', t.store_table, t.fts_column);
    END IF;
    UPDATE embeddings.targets tg SET fts_config = NULL, fts_column = NULL, fts_title_weight = NULL, updated_at = now()
    WHERE tg.id = t.id RETURNING * INTO t;
    PERFORM embeddings_internal.generate_access(t);
    PERFORM set_config('embeddings.following', 'off', true);
END
$$;
COMMENT ON FUNCTION embeddings.disable_fts IS
    'Turns full-text search off for a target: drops its tsvector column. Schema owner only.';

-- The full-text ranking of a search of target t: documents (rows, or a chunked target's
-- documents by their best chunk) matching websearch_to_tsquery(query) and the filter, best
-- first by ts_rank_cd, ties by key; at most `depth`. Only an upper-case OR is the operator:
-- websearch_to_tsquery() reads the word "or" in any case as one, which turned questions
-- ("send print output to a file or buffer") and pasted messages ("method must be GET or
-- POST") into "everything else, or one word", matching every passage that holds that word
-- (docs/performance.md). A lower-case "or" (Or, oR) gets a "_" after it: a word again,
-- which the configuration drops as a stop word or keeps as a lexeme like any other, its
-- position kept within a "quoted phrase"; OR in capitals stays the operator, as in web
-- search engines. A "-" excludes the word it touches ("-pepper"); one before a space, another
-- "-", an operator character or the end is a space: websearch_to_tsquery() reads each "-" in
-- place of a word as a NOT waiting for its word, and 32 of them with none between (a
-- docstring's "----------" under a heading, "- - -") failed the search with "tsquery stack too
-- small". Each with `text_score`, its ts_rank_cd divided by the best one's (the
-- convex fusion's text score, sql/59_hybrid.sql's hybrid_search()). $1 the query text, $2 the
-- filter, $3 the depth. In two halves around the filter's condition (embeddings_internal.generate_search() makes
-- the target's embeddings_<id>_text_ranking() of them, sql/58_search.sql).
CREATE FUNCTION embeddings_internal.fts_ranking_sql(t embeddings.targets) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q jsonb := embeddings_internal.search_sql(t);
    -- The relation of the tsvector: the table, its chunk table or its side table.
    doc text := q->>'store';
BEGIN
    RETURN ARRAY[
        format(
            'SELECT r.key, r.content, r.seq, r.start_offset, r.end_offset, r.headings, r.page, r.text_rank,'
            ' r.text_rank OPERATOR(pg_catalog./) NULLIF(pg_catalog.max(r.text_rank) OVER (), 0) AS text_score FROM ('
            ' SELECT DISTINCT ON (%1$s) %1$s AS key, %2$s AS content, %3$s AS seq,'
            '  %9$s AS start_offset, %10$s AS end_offset, %11$s AS headings, %12$s AS page,'
            '  pg_catalog.ts_rank_cd(%4$s.%5$I, q.q) AS text_rank'
            ' FROM %6$s, %7$s AS q(q)'
            ' WHERE %4$s.%5$I OPERATOR(pg_catalog.@@) q.q AND %8$s IS NOT NULL AND (',
            q->>'key', q->>'content', q->>'seq', doc, t.fts_column, q->>'from',
            embeddings_internal.every_word_query_sql(t.fts_config, '$1'), q->>'vector',
            q->>'start_offset', q->>'end_offset', q->>'headings', q->>'page'),
        format(
            ') ORDER BY %1$s, pg_catalog.ts_rank_cd(%2$s.%3$I, q.q) DESC) r'
            ' ORDER BY r.text_rank DESC, r.key LIMIT $3',
            q->>'key', doc, t.fts_column)];
END
$$;

-- hybrid_search()'s tuning checked (`text_w`: the text weight, its default applied), for every
-- caller: the CLI and POST /search refuse the same tuning before they embed the question, with
-- the same message but for its "embeddings.hybrid_search: " (worker/retrieval/fusion.py; a 400
-- over HTTP). rrf_k and each weight: 0, or from 1e-6 to 1e6: beyond, the fusion's
-- arithmetic over- or underflows (1.7e308 and 5e-324 were Postgres's "value out of range",
-- naming no argument), and within it is any ratio of weights one could mean; NaN (which
-- compares above every number) and infinities are refused, not fused into NaN scores. The
-- weights not both 0: no ranking would count, every score 0.
CREATE FUNCTION embeddings_internal.hybrid_tuning_check(k integer, depth integer, rrf_k double precision,
                                                        vector_weight double precision, text_w double precision,
                                                        text_match text, fusion text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    names CONSTANT text[] := ARRAY['rrf_k', 'vector_weight', 'text_weight'];
    given CONSTANT double precision[] := ARRAY[rrf_k, vector_weight, text_w];
BEGIN
    IF k IS NULL OR k < 1 OR depth IS NULL OR depth < 1 THEN
        RAISE EXCEPTION 'embeddings.hybrid_search: k and depth must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1..3 LOOP
        IF given[i] IS NULL OR NOT (given[i] = 0 OR given[i] BETWEEN 1e-6 AND 1e6) THEN
            RAISE EXCEPTION 'embeddings.hybrid_search: % must be a number of at least 0: 0 or from 1e-06 to 1e+06', names[i]
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('%s is %s.', names[i], coalesce(given[i]::text, 'NULL'));
        END IF;
    END LOOP;
    IF vector_weight = 0 AND text_w = 0 THEN
        RAISE EXCEPTION 'embeddings.hybrid_search: vector_weight and text_weight cannot both be 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF text_match IS NULL OR text_match NOT IN ('all', 'any') THEN
        RAISE EXCEPTION 'embeddings.hybrid_search: text_match is ''all'' (every word) or ''any'' (any word), not %', coalesce(quote_literal(text_match), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fusion IS NULL OR fusion NOT IN ('convex', 'rrf') THEN
        RAISE EXCEPTION 'embeddings.hybrid_search: fusion is ''convex'' (weighted scores) or ''rrf'' (reciprocal ranks), not %', coalesce(quote_literal(fusion), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The rank constant is rrf's alone: the convex fusion would ignore it, as a vector search
    -- ignores all of these (the worker refuses both). Its default, 60, is taken from any call
    -- (it changes nothing, and a 0.3.0 worker passes it in every search: a rolling upgrade).
    IF fusion = 'convex' AND rrf_k <> 60 THEN
        RAISE EXCEPTION 'embeddings.hybrid_search: rrf_k is for fusion ''rrf'': the convex one has no rank constant'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('rrf_k is %s.', rrf_k),
                  HINT = 'Pass fusion => ''rrf'' too, or leave rrf_k out.';
    END IF;
END
$$;

-- Hybrid search: the `k` documents of `source` best by a fusion of the vector ranking
-- (embeddings.search() of `query_embedding`) and the full-text ranking of `query`, each cut at
-- `depth` candidates. The full-text ranking (`text_match`):
--   'any' (the default): the documents holding any word of the query, ranked by BM25
--         (sql/59_bm25.sql), which puts those holding more of its rarer words first;
--   'all': those holding every word, websearch_to_tsquery with "quoted phrases", -excluded
--         words and OR in capitals, ranked by ts_rank_cd.
-- The fusion (`fusion`):
--   'convex' (the default): a weighted sum of scores on scales that do not depend on the query,
--       score = vector_weight * (1 - cosine distance) + text_weight * text_score
--     text_score being, for 'any', the document's BM25 score divided by the sum of the idf of
--     the query's words (about 1 for a document holding each once), plus 2.5 when it is one
--     of at most 10 documents holding every word of the query (a selective match: a name, a
--     message, a rare phrase; one that hundreds of documents hold adds little to BM25); for
--     'all', its ts_rank_cd divided by the best document's. A document missing from a
--     ranking cut at `depth` counts with that ranking's lowest figure (its own is at most
--     that); one missing from a full-text ranking that was not cut holds none of the words:
--     0. Weights 1 and 0.2 unless given.
--   'rrf': reciprocal rank fusion, score = vector_weight / (rrf_k + vector_rank) + text_weight
--     / (rrf_k + text_rank), a ranking a document is missing from adding nothing. Weights 1
--     and 2 unless given.
-- The defaults were chosen by measurement (docs/retrieval-quality.md). On BEIR's NFCorpus with
-- all-MiniLM-L6-v2: nDCG@10 0.366, against 0.354 for the previous default (RRF of
-- every-word matching, text_weight 2), 0.356 for RRF of the same BM25 ranking and 0.317 for
-- the vector ranking alone. On the standard library's documentation (bench/quality): exact
-- terms as high or higher, paraphrases within 0.01. A convex fusion weighs how well a
-- document matches, not only its place: the documents of a question whose words they hold
-- only in passing (a paraphrase) move little, one holding all of them moves much.
-- Equal scores by the best single rank (a document one ranking puts first before one that is
-- second in both), then by key. `filter` as for search(). Each row: the key (typed as in the
-- table), the score, the content (the best chunk by distance, else by text rank, for a chunked
-- target) and its `seq`, the cosine distance (NULL when the document is not in the vector
-- ranking), both ranks (from 1; NULL where missing) and the chunk's character offsets, heading
-- path and page (as search()'s). With the caller's rights, as search().
-- pgvector's halfvec in the signature below, wherever pgvector is installed (public here,
-- `extensions` on Supabase): its schema is searched after pg_catalog while the function is
-- created, and only then (a type's name is unique in its schema; these statements call nothing).
SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident(embeddings.vector_schema()) || ', pg_temp', true);
CREATE FUNCTION embeddings.hybrid_search(source regclass, query text, query_embedding halfvec, k integer DEFAULT 10,
                                         filter jsonb DEFAULT NULL, embedding_column name DEFAULT NULL,
                                         rrf_k double precision DEFAULT 60, vector_weight double precision DEFAULT 1,
                                         text_weight double precision DEFAULT NULL, depth integer DEFAULT 100,
                                         text_match text DEFAULT 'any', fusion text DEFAULT 'convex')
RETURNS TABLE (key jsonb, score double precision, content text, seq integer, distance double precision,
               vector_rank integer, text_rank integer, start_offset integer, end_offset integer,
               headings text[], page integer)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets := embeddings_internal.search_target(source, embedding_column);
    by_vector jsonb;
    by_text jsonb;
    every_word jsonb := '[]';
    n integer := greatest(depth, k);
    convex boolean := fusion = 'convex';
    text_w double precision := coalesce(text_weight, CASE WHEN fusion = 'convex' THEN 0.2 ELSE 2 END);
    vector_floor double precision := 0;
    text_floor double precision := 0;
    prefix text := 'embeddings_' || t.id;
BEGIN
    IF t.fts_config IS NULL THEN
        RAISE EXCEPTION '% has no full-text search for hybrid search', source
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('SELECT embeddings.enable_fts(%L, ''english'');', source::text);
    END IF;
    PERFORM embeddings_internal.hybrid_tuning_check(k, depth, rrf_k, vector_weight, text_w, text_match, fusion);
    -- Either ranking may be left out (NULL), not both: no question at all is an error, not the
    -- table's first rows with a score of 0.
    IF query IS NULL AND query_embedding IS NULL THEN
        RAISE EXCEPTION 'embeddings.hybrid_search: query and query_embedding must not both be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- search()'s ranking as its JSON array (sql/58_search.sql), cut at n; none without a
    -- query vector (the rows in no order, else, each with a NULL distance).
    by_vector := CASE WHEN query_embedding IS NULL THEN '[]'
                      ELSE embeddings_internal.search_answer(t, query_embedding, n, filter) END;
    IF jsonb_array_length(by_vector) > n THEN
        SELECT jsonb_agg(v.value ORDER BY v.i) INTO by_vector
        FROM jsonb_array_elements(by_vector) WITH ORDINALITY AS v(value, i) WHERE v.i <= n;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);  -- (search_run() says why)
    EXECUTE format('SELECT embeddings.%I($1, $2, $3)',
                   prefix || CASE text_match WHEN 'any' THEN '_bm25_ranking' ELSE '_text_ranking' END)
        INTO by_text USING embeddings_internal.fulltext_words(query), filter, n;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);  -- (search_run() says why)
    IF convex THEN
        -- The figures of a document a ranking left out (above): the vector ranking's least
        -- similarity; the full-text ranking's least score when it was cut, else 0.
        vector_floor := coalesce(1 - (by_vector->-1->>'distance')::double precision, 0);
        IF jsonb_array_length(by_text) >= n THEN
            text_floor := coalesce((by_text->-1->>'text_score')::double precision, 0);
        END IF;
        -- The documents holding every word, when at most 10 do (11 asked for, to tell); none
        -- when none holds any (a question of stop words has no words to hold). The BM25
        -- ranking marks them itself where it can (its rows' `every`, sql/59_bm25.sql, read
        -- below); where it cannot (NULL), the every-word ranking tells.
        IF text_match = 'any' AND text_w > 0 AND jsonb_array_length(by_text) > 0
           AND jsonb_typeof(by_text->0->'every') IS DISTINCT FROM 'boolean' THEN
            EXECUTE format('SELECT embeddings.%I($1, $2, 11)', prefix || '_text_ranking')
                INTO every_word USING embeddings_internal.fulltext_words(query), filter;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);  -- (search_run() says why)
            IF jsonb_array_length(every_word) > 10 THEN
                every_word := '[]';
            END IF;
        END IF;
    END IF;
    -- The k best first (each ranking's row as it came, v and x), then their fields: read
    -- from the JSON for those k only.
    RETURN QUERY
        SELECT f.key, f.score,
               coalesce(f.v->>'content', f.x->>'content'),
               coalesce(f.v->>'seq', f.x->>'seq')::integer,
               (f.v->>'distance')::double precision,
               f.vi::integer, f.xi::integer,
               (CASE WHEN f.v IS NOT NULL THEN f.v->>'start_offset' ELSE f.x->>'start_offset' END)::integer,
               (CASE WHEN f.v IS NOT NULL THEN f.v->>'end_offset' ELSE f.x->>'end_offset' END)::integer,
               CASE WHEN jsonb_typeof(coalesce(f.v, f.x)->'headings') = 'array'
                    THEN ARRAY(SELECT jsonb_array_elements_text(coalesce(f.v, f.x)->'headings')) END,
               (coalesce(f.v, f.x)->>'page')::integer
        FROM (SELECT coalesce(v.value->'key', x.value->'key') AS key,
                     CASE WHEN convex
                          THEN vector_weight * coalesce(1 - (v.value->>'distance')::double precision, vector_floor)
                               + text_w * (coalesce((x.value->>'text_score')::double precision, text_floor)
                                           + CASE WHEN (x.value->>'every')::boolean OR e.key IS NOT NULL THEN 2.5 ELSE 0 END)
                          ELSE coalesce(vector_weight / (rrf_k + v.i), 0) + coalesce(text_w / (rrf_k + x.i), 0) END AS score,
                     v.value AS v, x.value AS x, v.i AS vi, x.i AS xi
              FROM jsonb_array_elements(by_vector) WITH ORDINALITY AS v(value, i)
              FULL JOIN jsonb_array_elements(by_text) WITH ORDINALITY AS x(value, i) ON v.value->'key' = x.value->'key'
              LEFT JOIN (SELECT DISTINCT w.value->'key' AS key FROM jsonb_array_elements(every_word) w) e
                     ON e.key = coalesce(v.value->'key', x.value->'key')
              ORDER BY 2 DESC, least(v.i, x.i), 1
              LIMIT k) f
        ORDER BY f.score DESC, least(f.vi, f.xi), f.key;
END
$$;
COMMENT ON FUNCTION embeddings.hybrid_search IS
    'The k rows of a watched table best by a fusion of vector distance and full-text match (convex, or reciprocal rank fusion). Reads with the caller''s rights; needs enable_fts().';
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
