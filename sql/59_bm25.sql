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
CREATE FUNCTION embeddings.any_lexeme_query(v tsvector) RETURNS tsquery
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(tsvector_to_array(v)) AS l
$$;

-- The BM25 ranking of a search of target t, in the shape of fts_ranking_sql()'s: documents
-- (rows, or a chunked target's documents by their best chunk) holding any lexeme of the query
-- and matching the filter, best first by the score above (`text_rank`), ties by key; at most
-- `depth`. Each also with `text_score`, its score divided by the sum of the idf of the query's
-- lexemes that any candidate holds: about 1 for a document holding each of them once at the
-- mean length, whatever the query's length or rarity, so that hybrid search's convex fusion
-- can weigh it against a cosine similarity (sql/59_hybrid.sql). A query whose words a
-- document matches poorly keeps low scores, where dividing by the best document's score would
-- raise its best to 1. $1 the query text, $2 the filter, $3 the depth. In two halves around the filter's condition
-- (embeddings.generate_search() makes the target's embeddings_<id>_bm25_ranking() of them).
CREATE FUNCTION embeddings.bm25_ranking_sql(t embeddings.targets) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q jsonb := embeddings.search_sql(t);
    -- The relation of the tsvector: the table, its chunk table or its side table.
    fts text := format('%s.%I', CASE t.store_kind WHEN 'chunks' THEN 'c' WHEN 'side' THEN 'v' ELSE 's' END,
                       t.fts_column);
    -- Fields (embeddings.fields_tsvector()): the title's words are weighted A in the tsvector.
    fields boolean := t.fts_title_weight IS NOT NULL AND NOT embeddings.store_has_chunks(t);
BEGIN
    RETURN ARRAY[
        -- m: the candidates, each with its length and the query's lexemes it holds (the others
        -- filtered out in C: setweight() marks the query's, ts_filter() keeps the marked). The
        -- tsvector is read (detoasted) once, in d: each function given the column itself would
        -- read it again, and reading is most of a candidate's cost. Without fields our
        -- tsvectors hold no weight but D (fts_sql()), so the marked are exactly the query's
        -- lexemes. With fields they hold A (the title) and D: d is the tsvector as it is (an
        -- empty setweight() copies it), the query's lexemes are marked B, and `title` keeps
        -- the title's places of each (a few lexemes at most) for tf below.
        format(
            'WITH w AS (SELECT pg_catalog.tsvector_to_array(x.v) AS lexemes, embeddings.any_lexeme_query(x.v) AS q'
            '  FROM (SELECT %1$s AS v) x),'
            ' m AS MATERIALIZED (SELECT %2$s AS key, %3$s AS content, %4$s AS seq, %5$s AS start_offset,'
            '  %6$s AS end_offset, %7$s AS headings, %8$s AS page,'
            '  pg_catalog.length(d.v)::double precision AS len,'
            '  %12$s AS hits, %13$s AS title,'
            '  pg_catalog.row_number() OVER () AS i'
            '  FROM %10$s CROSS JOIN w CROSS JOIN LATERAL (SELECT %14$s AS v OFFSET 0) d'
            '  WHERE %9$s OPERATOR(pg_catalog.@@) w.q AND %11$s IS NOT NULL AND (',
            embeddings.plain_fts_sql(t.fts_config, '$1'), q->>'key', q->>'content', q->>'seq', q->>'start_offset',
            q->>'end_offset', q->>'headings', q->>'page', fts, q->>'from', q->>'vector',
            CASE WHEN fields THEN 'pg_catalog.ts_filter(pg_catalog.setweight(d.v, ''B'', w.lexemes), ''{b}'')'
                 ELSE 'pg_catalog.ts_filter(d.v, ''{a}'')' END,
            CASE WHEN fields
                 THEN 'pg_catalog.ts_filter(pg_catalog.setweight(pg_catalog.ts_filter(d.v, ''{a}''), ''B'', w.lexemes), ''{b}'')'
                 ELSE 'NULL::pg_catalog.tsvector' END,
            CASE WHEN fields THEN format('pg_catalog.setweight(%s, ''A'', ''{}''::pg_catalog.text[])', fts)
                 ELSE format('pg_catalog.setweight(%s, ''A'', w.lexemes)', fts) END),
        -- n: N and avglen; h: each candidate's lexemes with tf and df; b: the scores; z: the
        -- sum of the idf of the query's lexemes found (text_score's divisor, below).
        format(
            ')), n AS (SELECT greatest(pg_catalog.count(*)::double precision, coalesce(%1$s, 0)) AS n,'
            '  pg_catalog.avg(m.len) AS avglen FROM m),'
            ' h AS (SELECT m.i, m.len, x.lexeme, %4$s AS tf,'
            '  pg_catalog.count(*) OVER (PARTITION BY x.lexeme)::double precision AS df'
            '  FROM m, pg_catalog.unnest(m.hits) x),'
            ' b AS (SELECT h.i, pg_catalog.sum(pg_catalog.ln(1 + (n.n - h.df + 0.5) / (h.df + 0.5))'
            '  * h.tf * (1.2 + 1) / (h.tf + 1.2 * (1 - 0.75 + 0.75 * h.len / n.avglen))) AS score'
            '  FROM h, n GROUP BY h.i),'
            ' z AS (SELECT pg_catalog.sum(pg_catalog.ln(1 + (n.n - d.df + 0.5) / (d.df + 0.5))) AS mass'
            '  FROM (SELECT DISTINCT h.lexeme, h.df FROM h) d, n)'
            ' SELECT r.key, r.content, r.seq, r.start_offset, r.end_offset, r.headings, r.page, r.text_rank,'
            '  r.text_rank OPERATOR(pg_catalog./) z.mass AS text_score FROM ('
            '  SELECT %2$s m.key, m.content, m.seq, m.start_offset, m.end_offset, m.headings,'
            '   m.page, b.score AS text_rank'
            '  FROM m JOIN b ON b.i OPERATOR(pg_catalog.=) m.i %3$s) r, z'
            ' ORDER BY r.text_rank DESC, r.key LIMIT $3',
            embeddings.rows_estimate_sql(t),
            -- A document by its best chunk; a row is its own document.
            CASE WHEN embeddings.store_has_chunks(t) THEN 'DISTINCT ON (m.key)' ELSE '' END,
            CASE WHEN embeddings.store_has_chunks(t) THEN 'ORDER BY m.key, b.score DESC, m.seq' ELSE '' END,
            -- tf: with fields, each of the lexeme's places in the title counts title_weight times.
            CASE WHEN fields
                 THEN format('(pg_catalog.cardinality(x.positions) + %s * coalesce((SELECT pg_catalog.cardinality(y.positions)'
                             ' FROM pg_catalog.unnest(m.title) y WHERE y.lexeme OPERATOR(pg_catalog.=) x.lexeme), 0))::double precision',
                             t.fts_title_weight - 1)
                 ELSE 'pg_catalog.cardinality(x.positions)::double precision' END)];
END
$$;
