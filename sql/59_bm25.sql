-- The full-text ranking of hybrid search's text_match => 'any' (sql/59_hybrid.sql): the
-- documents holding any lexeme of the query, best first by Okapi BM25, computed from the
-- statistics of the rows the search reads. Nothing is stored for it and nothing is added to the
-- write path: the tsvector columns and their GIN indexes are those of every-word matching.
--
--   score(D) = sum over the query's lexemes t that D holds of
--              idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(D) / avglen))
--   idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))   (Lucene's form: never negative)
--   k1 = 1.2, b = 0.75
--
-- Not ts_rank_cd, which ranked this mode before: it has neither idf nor length normalization,
-- so an OR of common words put long, wordy passages first (docs/performance.md, "BM25 for
-- any-word matching"). Where each figure comes from, and why:
-- - The query's lexemes: to_tsvector() of the query with the target's configuration and dots
--   split, exactly as the documents' tsvectors are made (fts_sql()); each counted once.
-- - tf: the lexeme's positions in the document's tsvector. to_tsvector() keeps at most 256
--   positions per lexeme and none past 16,383 (later words share that last position), so a
--   document of more words than that is counted short.
-- - With fields (a target's fts_title_weight w, sql/59_hybrid.sql's fields_tsvector()): each
--   of the lexeme's places in the title (weight A in the tsvector) counts w times in tf, as
--   BM25F weighs a field; len(D), df and N as without (w 1 ranks as one field).
-- - len(D): the number of distinct lexemes of the tsvector (length(), from its header). The
--   number of words would need every lexeme's positions unnested: 3 to 5 times slower for a
--   question of common words over the quality bench's chunks, and it ranked no better there.
-- - df(t): over the rows the search may return (the filter, the caller's row-level security, a
--   vector). From embeddings.bm25_prune_rows rows (a setting, default 10000; the table's rows
--   as ANALYZE estimated them) counted lexeme by lexeme first: a count of the GIN index's
--   matches, about a microsecond a row against about 7 to score one. Below, the candidates
--   holding it: every row holding it is one then, and it costs nothing more. Not the planner's
--   statistics (pg_stats' most_common_elems, lexeme frequencies from ANALYZE): Postgres shows
--   them only to a role that may read the column and that no row-level security applies to,
--   which leaves out every search of a chunked or side-table target but its owner's (their
--   tables have a policy, sql/56_side.sql). Counted over what the caller sees, a tenant's
--   ranking also never depends on another tenant's rows. From embeddings.bm25_sample_rows
--   rows (a setting, default 200,000) no longer counted (a word in a third of 1,000,000 rows
--   took a second, the GIN bitmap lossy and every row rechecked): estimated from a sample of
--   the store's pages (TABLESAMPLE SYSTEM, about 10,000 rows, the same pages on every call),
--   under the same conditions, for the words left out; a word sought gets its exact df from
--   the candidates, each of its rows one.
-- - The candidates, the rows scored: those holding a lexeme sought. Below
--   embeddings.bm25_prune_rows every lexeme is sought; from it, a lexeme is sought when a
--   tenth of N or fewer hold it, or while the rarer lexemes' rows (their df summed) are fewer
--   than the depth; a lexeme left out (`return` in a third of a table of docstrings) still
--   scores the candidates holding it. A row holding only words left out is not ranked: each
--   of those is held by more than a tenth of N (an idf under ln 10) and by no fewer rows than
--   any word sought, whose df sum to `depth` or more. From embeddings.bm25_sample_rows a word
--   is also sought only while the rarer words' rows with its own (estimated) are within
--   embeddings.bm25_candidate_rows (a setting, default 10,000), the rarest always: a tenth
--   of 1,000,000 rows is 100,000 to score a word. Every row holding every word of the
--   query is a candidate (hybrid search asks which hold every word). So the
--   statement's cost follows the rows holding the query's rarer words, not its commonest
--   (docs/retrieval-quality.md, "On large tables: the common words left out").
-- - avglen: the candidates' mean length, with the rows left out counted in where any are: at
--   most their number (for each lexeme left out, its df less the candidates holding it,
--   summed) at the mean length of the first 1,000 of them; sampled, their number and mean in
--   the sample, scaled. A table-wide mean would be a full
--   scan, and no statistic holds a tsvector's length in lexemes (pg_stats' avg_width is in
--   stored bytes, compressed in wide rows); the mean of the rows holding any of the query's
--   words ranked as well as the corpus's exact figures on the quality bench
--   (docs/performance.md), and the candidates alone can be far from it (the few rows of a
--   rare word: one docstring cycled through a table).
-- - N: the relation's rows as ANALYZE last estimated them (pg_class.reltuples, which any role
--   may read: search_rows_estimate()), and at least the candidates and any lexeme's df: a
--   table never analyzed (reltuples -1) counts only those, every idf then low but still in
--   order of rarity.
--   Under a filter or row-level security N stays the table's, so each idf is higher by about
--   ln(table rows / rows searched): more weight to matching more of the query's lexemes.

-- The OR of the lexemes of `v` (a query's tsvector) as a tsquery; NULL when it has none (a
-- question of stop words only). Built from the lexemes as they are: to_tsquery() would
-- normalize them a second time.
CREATE FUNCTION embeddings_internal.any_lexeme_query(v tsvector) RETURNS tsquery
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg('''' || replace(replace(l, E'\\', E'\\\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(tsvector_to_array(v)) AS l
$$;

-- The BM25 ranking's first part, w: the query's lexemes; the every-word query, and whether
-- each document matching it holds a lexeme (`whole`): no "!" outside its quoted lexemes, each
-- of those among the lexemes (tsquery's text doubles a quote and a backslash in a lexeme). $1
-- the query text.
CREATE FUNCTION embeddings_internal.bm25_words_sql(t embeddings.targets) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN format(
        'WITH w AS MATERIALIZED (SELECT y.*, y.e IS NOT NULL'
        '  AND pg_catalog.regexp_replace(y.e::text, %1$L, '''', ''g'') OPERATOR(pg_catalog.~) %2$L'
        '  AND ARRAY(SELECT pg_catalog.replace(pg_catalog.replace(l[1], %3$L, %4$L), %5$L, %6$L)'
        '            FROM pg_catalog.regexp_matches(y.e::text, %7$L, ''g'') l) OPERATOR(pg_catalog.<@) y.lexemes AS whole'
        '  FROM (SELECT pg_catalog.tsvector_to_array(x.v) AS lexemes,'
        '   %8$s AS e FROM (SELECT %9$s AS v) x) y)',
        $r$'(?:[^']|'')*'$r$, E'^[\\s&|()<>0-9-]*$', $r$''$r$, $r$'$r$, E'\\\\', E'\\', $r$'((?:[^']|'')*)'$r$,
        CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'NULL::pg_catalog.tsquery'
             ELSE format('CASE WHEN pg_catalog.length(x.v) OPERATOR(pg_catalog.>) 0 THEN %s END',
                         embeddings_internal.every_word_query_sql(t.fts_config, '$1')) END,
        embeddings_internal.plain_fts_sql(t.fts_config, '$1'));
END
$$;

-- Two statements in parts around a filter's condition, one after the other: `a`'s last part
-- and `b`'s first joined (no condition between them).
CREATE FUNCTION embeddings_internal.glued(a text[], b text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a[1:cardinality(a) - 1] || (a[cardinality(a)] || b[1]) || b[2:cardinality(b)]
$$;

-- On a table of embeddings.bm25_sample_rows rows or more (a setting, default 200,000; the
-- table's estimate), the most rows of the rarer words the ranking scores: the setting
-- embeddings.bm25_candidate_rows (default 10,000), as an SQL expression.
CREATE FUNCTION embeddings_internal.bm25_budget_sql() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'coalesce(nullif(pg_catalog.current_setting(''embeddings.bm25_candidate_rows'', true), '''')::double precision, 10000)'
$$;

-- The percent of target t's store pages sampled for its words' df there: about as many rows
-- as the budget, at least 10,000 (a word held by a tenth of the rows is then seen about 1,000
-- times: within a few percent), all of them where the table has fewer.
CREATE FUNCTION embeddings_internal.bm25_sample_percent_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('LEAST(100, 100 * greatest(10000, %s) / greatest(coalesce(%s, 0), 1))',
                  embeddings_internal.bm25_budget_sql(), embeddings_internal.rows_estimate_sql(t))
$$;

-- The relations of target t's search (`q`: search_sql()'s parts) with its store sampled: a
-- percent of its pages (bm25_sample_percent_sql()), the same pages on every call while the
-- table's pages and estimate stay (REPEATABLE), so that a question asked twice ranks alike.
-- Pages rather than rows (BERNOULLI would read every page): a table laid out in order (a
-- document's chunks together) makes the estimate coarser, not slower.
CREATE FUNCTION embeddings_internal.sampled_sql(t embeddings.targets, q jsonb) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    store text := t.store_table::regclass::text || ' ' || (q->>'store');
BEGIN
    -- Every store kind's relations begin with its store (search_sql()).
    IF left(q->>'from', length(store)) IS DISTINCT FROM store THEN
        RAISE EXCEPTION 'the search of target % does not begin with its store: %', t.id, q->>'from';
    END IF;
    RETURN store || format(' TABLESAMPLE pg_catalog.system ((%s)::real) REPEATABLE (0)',
                           embeddings_internal.bm25_sample_percent_sql(t))
           || substr(q->>'from', length(store) + 1);
END
$$;

-- The BM25 ranking's lexemes (its first part, before the candidates): w (bm25_words_sql()), g:
-- each lexeme's df: with `mode` 'pruned' counted under the search's own conditions (in two
-- parts around the filter's condition); with 'sampled' (sa, ge) estimated from a sample of the
-- table's pages (sampled_sql()) for the lexemes it holds, NULL for the others; with 'plain'
-- NULL. j (but with 'plain'): whether each is sought (above). a: the candidates' query, the
-- OR of the lexemes sought (or the every-word query where `whole` and a lexeme is left out: a
-- document holding every word is a candidate, so that `every` stays exact), the OR of those
-- left out, and N. With 'sampled' g follows j: the df of the lexemes left out as estimated,
-- NULL for those sought, whose df the candidates give exactly (each of their rows is one).
-- `q` and `fts`: the store kind's search parts and the tsvector column, as
-- bm25_ranking_sql() read them.
CREATE FUNCTION embeddings_internal.bm25_sought_sql(t embeddings.targets, mode text, q jsonb, fts text) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ja text;
BEGIN
    IF mode = 'plain' THEN  -- every lexeme sought (no j), its df from the candidates (NULL here)
        RETURN ARRAY[embeddings_internal.bm25_words_sql(t) || format(
            ', g AS MATERIALIZED (SELECT l.lexeme, NULL::bigint AS df FROM w, pg_catalog.unnest(w.lexemes) AS l(lexeme)),'
            ' a AS MATERIALIZED (SELECT embeddings_internal.any_lexeme_query(pg_catalog.array_to_tsvector(w.lexemes)) AS q,'
            '  NULL::pg_catalog.tsquery AS left_out, coalesce(%s, 0) AS n FROM w),',
            embeddings_internal.rows_estimate_sql(t))];
    END IF;
    ja := format(
        ' j AS MATERIALIZED (SELECT y.lexeme, y.df, y.df IS NULL OR y.rarer OPERATOR(pg_catalog.<) $3'
        '  OR y.df * 10 OPERATOR(pg_catalog.<=) y.n%3$s AS sought, y.n'
        '  FROM (SELECT g.lexeme, g.df, greatest(pg_catalog.max(g.df) OVER ()::double precision, coalesce(%1$s, 0)) AS n,'
        '   coalesce(pg_catalog.sum(g.df) OVER (ORDER BY g.df%5$s, g.lexeme ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS rarer'
        '   FROM %2$s WHERE g.df IS NULL OR g.df OPERATOR(pg_catalog.>) 0) y),%4$s'
        ' a AS MATERIALIZED (SELECT CASE WHEN w.whole AND x.left_out IS NOT NULL THEN x.q OPERATOR(pg_catalog.||) w.e ELSE x.q END AS q,'
        '  x.left_out, x.n FROM w,'
        '  (SELECT embeddings_internal.any_lexeme_query(pg_catalog.array_to_tsvector(pg_catalog.array_agg(j.lexeme) FILTER (WHERE j.sought))) AS q,'
        '   CASE WHEN pg_catalog.bool_or(NOT j.sought) THEN embeddings_internal.any_lexeme_query(pg_catalog.array_to_tsvector('
        '    pg_catalog.array_agg(j.lexeme) FILTER (WHERE NOT j.sought))) END AS left_out,'
        '   pg_catalog.max(j.n) AS n FROM j) x),',
        embeddings_internal.rows_estimate_sql(t),
        CASE mode WHEN 'sampled' THEN 'ge g' ELSE 'g' END,
        -- Sampled (a large table): the rarer words' rows, the candidates, within a budget.
        CASE mode WHEN 'sampled' THEN format(' AND y.rarer + y.df OPERATOR(pg_catalog.<=) %s', embeddings_internal.bm25_budget_sql()) ELSE '' END,
        CASE mode WHEN 'sampled'
             THEN ' g AS MATERIALIZED (SELECT j.lexeme, CASE WHEN NOT j.sought THEN j.df END AS df FROM j),' ELSE '' END,
        CASE mode WHEN 'sampled' THEN ' NULLS FIRST' ELSE '' END);
    IF mode = 'sampled' THEN
        -- sa: the sample's rows (those the search may return), each with its length and the
        -- query's lexemes it holds (marked and filtered in C, as m's candidates); ge: each
        -- lexeme's rows in it, scaled to the table (NULL: none in the sample; ordered first).
        RETURN ARRAY[
            embeddings_internal.bm25_words_sql(t) || format(
                ', sa AS MATERIALIZED (SELECT pg_catalog.length(d.v)::double precision AS len,'
                '  pg_catalog.tsvector_to_array(pg_catalog.ts_filter(pg_catalog.setweight(d.v, ''B'', w.lexemes), ''{b}'')) AS held'
                '  FROM (SELECT %1$s AS v FROM %2$s WHERE %1$s IS NOT NULL AND %3$s IS NOT NULL AND (',
                fts, embeddings_internal.sampled_sql(t, q), q->>'vector'),
            format(
                ') OFFSET 0) d CROSS JOIN w),'
                ' ge AS MATERIALIZED (SELECT l.lexeme, c.seen * 100 / %1$s AS df FROM w CROSS JOIN pg_catalog.unnest(w.lexemes) AS l(lexeme)'
                '  LEFT JOIN (SELECT x.lexeme, pg_catalog.count(*)::double precision AS seen FROM sa, pg_catalog.unnest(sa.held) AS x(lexeme)'
                '   GROUP BY x.lexeme) c ON c.lexeme OPERATOR(pg_catalog.=) l.lexeme),',
                embeddings_internal.bm25_sample_percent_sql(t)) || ja];
    END IF;
    RETURN ARRAY[
        embeddings_internal.bm25_words_sql(t) || format(
            ', g AS MATERIALIZED (SELECT l.lexeme, (SELECT pg_catalog.count(*) FROM %1$s'
            '  WHERE %2$s OPERATOR(pg_catalog.@@) embeddings_internal.any_lexeme_query(pg_catalog.array_to_tsvector(ARRAY[l.lexeme]))'
            '  AND %3$s IS NOT NULL AND (',
            q->>'from', fts, q->>'vector'),
        ')) AS df FROM w, pg_catalog.unnest(w.lexemes) AS l(lexeme)),' || ja];
END
$$;

-- The BM25 ranking's part after its candidates (m): h, each candidate's lexemes with tf; k,
-- how many candidates hold each; o, where lexemes are left out the rows holding only those,
-- for avglen: their number and mean length. With `mode` 'pruned' their number at most (for
-- each lexeme left out, its df less the candidates holding it, summed) and the mean length of
-- the first 1,000 of them (in two parts around the filter's condition); with 'sampled' both
-- from the sample (sa), scaled; with 'plain' NULLs. The candidates alone can be far from the
-- mean (the few documents of a rare word: a title's). `q` and `fts` as bm25_sought_sql()'s.
CREATE FUNCTION embeddings_internal.bm25_left_out_sql(t embeddings.targets, mode text, q jsonb, fts text) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fields boolean := t.fts_title_weight IS NOT NULL AND NOT embeddings_internal.store_has_chunks(t);
    chunks boolean := embeddings_internal.store_has_chunks(t);
    hk text := format(
        ' h AS MATERIALIZED (SELECT y.%1$skey, y.len, y.every, (y.x).lexeme AS lexeme, %2$s AS tf'
        '  FROM (SELECT m.%1$skey, m.len, m.title, m.every, pg_catalog.unnest(m.hits) AS x FROM m) y),'
        ' k AS MATERIALIZED (SELECT h.lexeme, pg_catalog.count(*) AS held FROM h GROUP BY h.lexeme),',
        CASE WHEN chunks THEN 'i, ' ELSE '' END,
        -- tf: with fields, each of the lexeme's places in the title counts title_weight times.
        CASE WHEN fields
             THEN format('(pg_catalog.cardinality((y.x).positions) + %s * coalesce((SELECT pg_catalog.cardinality(u.positions)'
                         ' FROM pg_catalog.unnest(y.title) u WHERE u.lexeme OPERATOR(pg_catalog.=) (y.x).lexeme), 0))::double precision',
                         t.fts_title_weight - 1)
             ELSE 'pg_catalog.cardinality((y.x).positions)::double precision' END);
BEGIN
    IF mode = 'plain' THEN  -- nothing left out
        RETURN ARRAY[hk || ' o AS (SELECT NULL::double precision AS rows, NULL::double precision AS len),'];
    ELSIF mode = 'sampled' THEN
        RETURN ARRAY[hk || format(
            ' o AS MATERIALIZED (SELECT pg_catalog.count(*)::double precision * 100 / %s AS rows, pg_catalog.avg(sa.len) AS len'
            '  FROM sa, (SELECT pg_catalog.array_agg(j.lexeme) FILTER (WHERE NOT j.sought) AS left_out,'
            '   pg_catalog.array_agg(j.lexeme) FILTER (WHERE j.sought) AS sought FROM j) x'
            '  WHERE sa.held OPERATOR(pg_catalog.&&) x.left_out AND NOT sa.held OPERATOR(pg_catalog.&&) x.sought),',
            embeddings_internal.bm25_sample_percent_sql(t))];
    END IF;
    RETURN ARRAY[
        hk || format(
            ' o AS MATERIALIZED (SELECT (SELECT pg_catalog.sum(j.df OPERATOR(pg_catalog.-) coalesce(k.held, 0)) FROM j'
            '   LEFT JOIN k ON k.lexeme OPERATOR(pg_catalog.=) j.lexeme WHERE NOT j.sought)::double precision AS rows,'
            '  (SELECT pg_catalog.avg(pg_catalog.length(y.v))::double precision FROM (SELECT %1$s AS v FROM %2$s CROSS JOIN a'
            '   WHERE %1$s OPERATOR(pg_catalog.@@) a.left_out AND NOT %1$s OPERATOR(pg_catalog.@@) a.q AND %3$s IS NOT NULL AND (',
            fts, q->>'from', q->>'vector'),
        ') LIMIT 1000) y) AS len),'];
END
$$;

-- The BM25 ranking of a search of target t, in the shape of fts_ranking_sql()'s: documents
-- (rows, or a chunked target's documents by their best chunk) holding a lexeme of the query
-- sought (above) and matching the filter, best first by the score above (`text_rank`), ties
-- by key; at most `depth`. Each also with `text_score`, its score divided by the sum of the
-- idf of the query's lexemes that any row holds: about 1 for a document holding each of them
-- once at the mean length, whatever the query's length or rarity, so that hybrid search's
-- convex fusion can weigh it against a cosine similarity (sql/59_hybrid.sql). A query whose words a
-- document matches poorly keeps low scores, where dividing by the best document's score would
-- raise its best to 1. A row's fields that are NULL for every row of its store kind (a chunk's
-- place, the content of a target with a content function) are left out: each field of each
-- of up to `depth` rows is JSON that hybrid_search() reads back, where a missing field reads
-- as NULL. $1 the query text, $2 the filter, $3 the depth. `mode` 'pruned': the statement for
-- tables of embeddings.bm25_prune_rows rows or more, in four parts around the filter's
-- condition, which the counts of df, the candidates and the rows left out each apply;
-- 'sampled', the one from embeddings.bm25_sample_rows, in three (the sample, the candidates);
-- 'plain', the one for smaller tables, in two (embeddings_internal.ranking_code() makes the
-- target's embeddings_<id>_bm25_ranking() of the three).
--
-- For a target that is not chunked, each row also tells whether the document holds every word
-- (`every`): whether it matches the every-word query (fts_ranking_sql()'s), true for none when
-- more than 10 documents do. Hybrid search weighs those (at most 10) up, and would otherwise
-- ask the every-word ranking for them, a second search. Only when that is exact, else `every`
-- is NULL on each row: every document matching the every-word query must be a candidate here
-- (the query has no negated word, and each of its lexemes is one of the query's here: then a
-- document matching it holds one of them, and where a lexeme is left out the candidates'
-- query ORs the every-word query in, no more rows unless it has an OR), and every one of them
-- must be among the rows returned (or more than 10 match).
--
-- Its cost is per candidate (every row holding a word sought), so the statement touches
-- each as few times as it can (docs/retrieval-quality.md, "What it costs", has the figures):
-- the query's lexemes and queries are computed once (w, materialized: inlined, the planner
-- put the query's to_tsvector() in every candidate's setweight() call), each candidate's
-- tsvector read once (d, a subquery scan rather than a lateral subquery per candidate), its
-- hits unnested once (in a target list: no function scan per candidate), the idf computed once
-- per lexeme, and a row's key carried along with its score rather than joined back.
CREATE FUNCTION embeddings_internal.bm25_ranking_sql(t embeddings.targets, mode text) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q jsonb := embeddings_internal.search_sql(t);
    -- The relation of the tsvector: the table, its chunk table or its side table.
    fts text := format('%s.%I', q->>'store',
                       t.fts_column);
    -- Fields (embeddings_internal.fields_tsvector()): the title's words are weighted A in the tsvector.
    fields boolean := t.fts_title_weight IS NOT NULL AND NOT embeddings_internal.store_has_chunks(t);
    chunks boolean := embeddings_internal.store_has_chunks(t);
    -- The result's fields besides the key that this store kind fills (search_sql()'s others
    -- are NULL literals): a content column's text, a chunk's place.
    extra text[] := ARRAY(SELECT f FROM unnest(ARRAY['content', 'seq', 'start_offset', 'end_offset', 'headings', 'page']) WITH ORDINALITY AS x(f, i)
                          WHERE q->>f !~ '^NULL::' ORDER BY i);
    -- A chunk's number among the candidates; a row's key is its own.
    id text := CASE WHEN chunks THEN 'i, ' ELSE '' END;
    m_extra text := (SELECT coalesce(string_agg(format('m.%I, ', f), ''), '') FROM unnest(extra) AS f);
BEGIN
    RETURN embeddings_internal.glued(embeddings_internal.glued(embeddings_internal.glued(
        -- w, g, j and a
        embeddings_internal.bm25_sought_sql(t, mode, q, fts),
        -- m: the candidates, each with its length, the query's lexemes it holds (the others
        -- filtered out in C: setweight() marks the query's, ts_filter() keeps the marked) and
        -- whether it matches the every-word query. The tsvector is read (detoasted) once, in
        -- d: each function given the column itself would read it again, and reading is most
        -- of a candidate's cost. Our tsvectors hold no weight but A and D (fts_sql(): A for
        -- a title's words, or a document chunk's heading path's), so the query's lexemes are
        -- marked B, and the marked are exactly those. With fields d is the tsvector as it is
        -- (an empty setweight() copies it), marked in m, where `title` keeps the title's
        -- places of each (a few lexemes at most) for tf below. A heading path's places count
        -- in tf as the text's (one field).
        ARRAY[format(
            ' m AS MATERIALIZED (SELECT d.key, %1$s pg_catalog.length(d.v)::double precision AS len,'
            '  %2$s AS hits, %3$s AS title, %4$s AS every%5$s'
            '  FROM (SELECT %6$s AS key, %7$s %8$s AS v FROM %9$s CROSS JOIN w CROSS JOIN a'
            '  WHERE %10$s OPERATOR(pg_catalog.@@) a.q AND %11$s IS NOT NULL AND (',
            (SELECT coalesce(string_agg(format('d.%I, ', f), ''), '') FROM unnest(extra) AS f),
            CASE WHEN fields THEN 'pg_catalog.ts_filter(pg_catalog.setweight(d.v, ''B'', w.lexemes), ''{b}'')'
                 ELSE 'pg_catalog.ts_filter(d.v, ''{b}'')' END,
            CASE WHEN fields
                 THEN 'pg_catalog.ts_filter(pg_catalog.setweight(pg_catalog.ts_filter(d.v, ''{a}''), ''B'', w.lexemes), ''{b}'')'
                 ELSE 'NULL::pg_catalog.tsvector' END,
            CASE WHEN chunks THEN 'NULL::boolean' ELSE 'd.v OPERATOR(pg_catalog.@@) w.e' END,
            CASE WHEN chunks THEN ', pg_catalog.row_number() OVER () AS i' ELSE '' END,
            q->>'key',
            (SELECT coalesce(string_agg(format('%s AS %I, ', q->>f, f), ''), '') FROM unnest(extra) AS f),
            CASE WHEN fields THEN format('pg_catalog.setweight(%s, ''A'', ''{}''::pg_catalog.text[])', fts)
                 ELSE format('pg_catalog.setweight(%s, ''B'', w.lexemes)', fts) END,
            q->>'from', fts, q->>'vector'), ') OFFSET 0) d CROSS JOIN w),']),
        -- h, k and o
        embeddings_internal.bm25_left_out_sql(t, mode, q, fts)),
        -- n: N, avglen and how many documents hold every word; f: each lexeme's idf from its
        -- df (counted or estimated where given, else the candidates holding it), NULL
        -- where no row holds it (not filtered out: the planner would expect a few rows of f,
        -- and then group b's by sorting, a seventh slower on NFCorpus); b: the scores; z: the
        -- sum of the idf of the query's lexemes any row holds (text_score's divisor, below).
        -- The ranking, then each row's `every` (above).
        ARRAY[format(
            ' n AS (SELECT greatest(pg_catalog.count(*)::double precision, (SELECT a.n FROM a)) AS n,'
            '  (pg_catalog.sum(m.len) + (SELECT coalesce(o.len * o.rows, 0) FROM o))'
            '  / (pg_catalog.count(*) + (SELECT CASE WHEN o.len IS NULL THEN 0 ELSE o.rows END FROM o)) AS avglen,'
            '  pg_catalog.count(*) FILTER (WHERE m.every) AS every FROM m),'
            ' f AS MATERIALIZED (SELECT y.lexeme, CASE WHEN y.df OPERATOR(pg_catalog.>) 0 THEN pg_catalog.ln(1 + (n.n - y.df + 0.5) / (y.df + 0.5)) END AS idf'
            '  FROM (SELECT g.lexeme, coalesce(g.df, k.held)::double precision AS df FROM g LEFT JOIN k ON k.lexeme OPERATOR(pg_catalog.=) g.lexeme) y, n),'
            ' b AS (SELECT h.%1$skey, h.every, pg_catalog.sum(f.idf * h.tf * (1.2 + 1)'
            '  / (h.tf + 1.2 * (1 - 0.75 + 0.75 * h.len / n.avglen))) AS score'
            '  FROM h JOIN f ON f.lexeme OPERATOR(pg_catalog.=) h.lexeme, n GROUP BY h.%1$skey, h.every),'
            ' z AS (SELECT pg_catalog.sum(f.idf) AS mass FROM f)'
            ' SELECT r.key, %2$s r.text_rank, r.text_score%3$s FROM ('
            '  SELECT r.*, r.text_rank OPERATOR(pg_catalog./) z.mass AS text_score FROM (%4$s) r, z'
            '  ORDER BY r.text_rank DESC, r.key LIMIT $3) r, n, w'
            ' ORDER BY r.text_rank DESC, r.key',
            id,
            replace(m_extra, 'm.', 'r.'),
            CASE WHEN chunks THEN ''
                 ELSE ', CASE WHEN w.whole AND (n.every OPERATOR(pg_catalog.>) 10 OR n.every OPERATOR(pg_catalog.=)'
                      ' pg_catalog.count(*) FILTER (WHERE r.every) OVER ()) THEN r.every AND n.every OPERATOR(pg_catalog.<=) 10 END AS every' END,
            CASE WHEN chunks
                 -- A document by its best chunk, with the chunk's place.
                 THEN format('SELECT DISTINCT ON (m.key) m.key, %s b.score AS text_rank, b.every FROM m JOIN b ON b.i OPERATOR(pg_catalog.=) m.i'
                             ' ORDER BY m.key, b.score DESC, m.seq', m_extra)
                 WHEN cardinality(extra) > 0
                 THEN format('SELECT m.key, %s b.score AS text_rank, b.every FROM m JOIN b ON b.key OPERATOR(pg_catalog.=) m.key', m_extra)
                 -- A row is its own document, its key all it returns.
                 ELSE 'SELECT b.key, b.score AS text_rank, b.every FROM b' END)]);
END
$$;
