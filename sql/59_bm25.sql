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
-- - df(t) and avglen: counted over the candidates, the rows holding any of the query's lexemes
--   that the search may return (the filter, the caller's row-level security, a vector). Every
--   row holding t is a candidate, so df(t) is exact for those rows, and it costs nothing: the
--   ranking reads each candidate's tsvector to score it anyway. Not the planner's statistics
--   (pg_stats' most_common_elems, lexeme frequencies from ANALYZE): Postgres shows them only to
--   a role that may read the column and that no row-level security applies to, which leaves out
--   every search of a chunked or side-table target but its owner's (their tables have a policy,
--   sql/56_side.sql). Counted over what the caller sees, a tenant's ranking also never depends
--   on another tenant's rows. avglen is the candidates' mean too: no statistic holds a
--   tsvector's length in lexemes (pg_stats' avg_width is in stored bytes, compressed in wide
--   rows) and the table's mean is a full scan. Measured on the quality bench, these ranked as
--   well as the corpus's exact figures (docs/performance.md).
-- - N: the relation's rows as ANALYZE last estimated them (pg_class.reltuples, which any role
--   may read: search_rows_estimate()), and at least the candidates: a table never analyzed
--   (reltuples -1) counts only its candidates, every idf then low but still in order of rarity.
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

-- The BM25 ranking's first part, w: the query's lexemes; their OR (the candidates); the
-- every-word query, and whether each document matching it is a candidate: no "!" outside its
-- quoted lexemes, each of those among the lexemes (tsquery's text doubles a quote and a
-- backslash in a lexeme). $1 the query text.
CREATE FUNCTION embeddings_internal.bm25_words_sql(t embeddings.targets) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN format(
        'WITH w AS MATERIALIZED (SELECT y.*, y.e IS NOT NULL'
        '  AND pg_catalog.regexp_replace(y.e::text, %1$L, '''', ''g'') OPERATOR(pg_catalog.~) %2$L'
        '  AND ARRAY(SELECT pg_catalog.replace(pg_catalog.replace(l[1], %3$L, %4$L), %5$L, %6$L)'
        '            FROM pg_catalog.regexp_matches(y.e::text, %7$L, ''g'') l) OPERATOR(pg_catalog.<@) y.lexemes AS whole'
        '  FROM (SELECT pg_catalog.tsvector_to_array(x.v) AS lexemes, embeddings_internal.any_lexeme_query(x.v) AS q,'
        '   %8$s AS e FROM (SELECT %9$s AS v) x) y)',
        $r$'(?:[^']|'')*'$r$, E'^[\\s&|()<>0-9-]*$', $r$''$r$, $r$'$r$, E'\\\\', E'\\', $r$'((?:[^']|'')*)'$r$,
        CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'NULL::pg_catalog.tsquery'
             ELSE format('CASE WHEN pg_catalog.length(x.v) OPERATOR(pg_catalog.>) 0 THEN %s END',
                         embeddings_internal.every_word_query_sql(t.fts_config, '$1')) END,
        embeddings_internal.plain_fts_sql(t.fts_config, '$1'));
END
$$;

-- The BM25 ranking of a search of target t, in the shape of fts_ranking_sql()'s: documents
-- (rows, or a chunked target's documents by their best chunk) holding any lexeme of the query
-- and matching the filter, best first by the score above (`text_rank`), ties by key; at most
-- `depth`. Each also with `text_score`, its score divided by the sum of the idf of the query's
-- lexemes that any candidate holds: about 1 for a document holding each of them once at the
-- mean length, whatever the query's length or rarity, so that hybrid search's convex fusion
-- can weigh it against a cosine similarity (sql/59_hybrid.sql). A query whose words a
-- document matches poorly keeps low scores, where dividing by the best document's score would
-- raise its best to 1. A row's fields that are NULL for every row of its store kind (a chunk's
-- place, the content of a target with a content function) are left out: each field of each
-- of up to `depth` rows is JSON that hybrid_search() reads back, where a missing field reads
-- as NULL. $1 the query text, $2 the filter, $3 the depth. In two halves around the filter's
-- condition (embeddings_internal.generate_search() makes the target's embeddings_<id>_bm25_ranking()
-- of them).
--
-- For a target that is not chunked, each row also tells whether the document holds every word
-- (`every`): whether it matches the every-word query (fts_ranking_sql()'s), true for none when
-- more than 10 documents do. Hybrid search weighs those (at most 10) up, and would otherwise
-- ask the every-word ranking for them, a second search. Only when that is exact, else `every`
-- is NULL on each row: every document matching the every-word query must be a candidate here
-- (the query has no negated word, and each of its lexemes is one of the query's here: then a
-- document matching it holds one of them), and every one of them must be among the rows
-- returned (or more than 10 match).
--
-- Its cost is per candidate (every row holding a word of the query), so the statement touches
-- each as few times as it can (docs/retrieval-quality.md, "What it costs", has the figures):
-- the query's lexemes and queries are computed once (w, materialized: inlined, the planner
-- put the query's to_tsvector() in every candidate's setweight() call), each candidate's
-- tsvector read once (d, a subquery scan rather than a lateral subquery per candidate), its
-- hits unnested once (in a target list: no function scan per candidate), the idf computed once
-- per lexeme, and a row's key carried along with its score rather than joined back.
CREATE FUNCTION embeddings_internal.bm25_ranking_sql(t embeddings.targets) RETURNS text[]
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
    w_sql text := embeddings_internal.bm25_words_sql(t);
    m_extra text := (SELECT coalesce(string_agg(format('m.%I, ', f), ''), '') FROM unnest(extra) AS f);
BEGIN
    RETURN ARRAY[
        -- m: the candidates, each with its length, the query's lexemes it holds (the others
        -- filtered out in C: setweight() marks the query's, ts_filter() keeps the marked) and
        -- whether it matches the every-word query. The tsvector is read (detoasted) once, in
        -- d: each function given the column itself would read it again, and reading is most
        -- of a candidate's cost. Without fields our tsvectors hold no weight but D
        -- (fts_sql()), so the marked are exactly the query's lexemes. With fields they hold A
        -- (the title) and D: d is the tsvector as it is (an empty setweight() copies it), the
        -- query's lexemes are marked B, and `title` keeps the title's places of each (a few
        -- lexemes at most) for tf below.
        w_sql || format(
            ', m AS MATERIALIZED (SELECT d.key, %1$s pg_catalog.length(d.v)::double precision AS len,'
            '  %2$s AS hits, %3$s AS title, %4$s AS every%5$s'
            '  FROM (SELECT %6$s AS key, %7$s %8$s AS v FROM %9$s CROSS JOIN w'
            '  WHERE %10$s OPERATOR(pg_catalog.@@) w.q AND %11$s IS NOT NULL AND (',
            (SELECT coalesce(string_agg(format('d.%I, ', f), ''), '') FROM unnest(extra) AS f),
            CASE WHEN fields THEN 'pg_catalog.ts_filter(pg_catalog.setweight(d.v, ''B'', w.lexemes), ''{b}'')'
                 ELSE 'pg_catalog.ts_filter(d.v, ''{a}'')' END,
            CASE WHEN fields
                 THEN 'pg_catalog.ts_filter(pg_catalog.setweight(pg_catalog.ts_filter(d.v, ''{a}''), ''B'', w.lexemes), ''{b}'')'
                 ELSE 'NULL::pg_catalog.tsvector' END,
            CASE WHEN chunks THEN 'NULL::boolean' ELSE 'd.v OPERATOR(pg_catalog.@@) w.e' END,
            CASE WHEN chunks THEN ', pg_catalog.row_number() OVER () AS i' ELSE '' END,
            q->>'key',
            (SELECT coalesce(string_agg(format('%s AS %I, ', q->>f, f), ''), '') FROM unnest(extra) AS f),
            CASE WHEN fields THEN format('pg_catalog.setweight(%s, ''A'', ''{}''::pg_catalog.text[])', fts)
                 ELSE format('pg_catalog.setweight(%s, ''A'', w.lexemes)', fts) END,
            q->>'from', fts, q->>'vector'),
        -- n: N, avglen and how many documents hold every word; h: each candidate's lexemes
        -- with tf; f: each lexeme's idf from its df; b: the scores; z: the sum of the idf of
        -- the query's lexemes found (text_score's divisor, below). The ranking, then each
        -- row's `every` (above).
        format(
            ') OFFSET 0) d CROSS JOIN w), n AS (SELECT greatest(pg_catalog.count(*)::double precision, coalesce(%1$s, 0)) AS n,'
            '  pg_catalog.avg(m.len) AS avglen, pg_catalog.count(*) FILTER (WHERE m.every) AS every FROM m),'
            ' h AS MATERIALIZED (SELECT y.%2$skey, y.len, y.every, (y.x).lexeme AS lexeme, %3$s AS tf'
            '  FROM (SELECT m.%2$skey, m.len, m.title, m.every, pg_catalog.unnest(m.hits) AS x FROM m) y),'
            ' f AS MATERIALIZED (SELECT h.lexeme, pg_catalog.ln(1 + (n.n - pg_catalog.count(*)::double precision + 0.5)'
            '  / (pg_catalog.count(*)::double precision + 0.5)) AS idf FROM h, n GROUP BY h.lexeme, n.n),'
            ' b AS (SELECT h.%2$skey, h.every, pg_catalog.sum(f.idf * h.tf * (1.2 + 1)'
            '  / (h.tf + 1.2 * (1 - 0.75 + 0.75 * h.len / n.avglen))) AS score'
            '  FROM h JOIN f ON f.lexeme OPERATOR(pg_catalog.=) h.lexeme, n GROUP BY h.%2$skey, h.every),'
            ' z AS (SELECT pg_catalog.sum(f.idf) AS mass FROM f)'
            ' SELECT r.key, %4$s r.text_rank, r.text_score%5$s FROM ('
            '  SELECT r.*, r.text_rank OPERATOR(pg_catalog./) z.mass AS text_score FROM (%6$s) r, z'
            '  ORDER BY r.text_rank DESC, r.key LIMIT $3) r, n, w'
            ' ORDER BY r.text_rank DESC, r.key',
            embeddings_internal.rows_estimate_sql(t), id,
            -- tf: with fields, each of the lexeme's places in the title counts title_weight times.
            CASE WHEN fields
                 THEN format('(pg_catalog.cardinality((y.x).positions) + %s * coalesce((SELECT pg_catalog.cardinality(u.positions)'
                             ' FROM pg_catalog.unnest(y.title) u WHERE u.lexeme OPERATOR(pg_catalog.=) (y.x).lexeme), 0))::double precision',
                             t.fts_title_weight - 1)
                 ELSE 'pg_catalog.cardinality((y.x).positions)::double precision' END,
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
                 ELSE 'SELECT b.key, b.score AS text_rank, b.every FROM b' END)];
END
$$;
