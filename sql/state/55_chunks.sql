-- Long documents of chunked targets (55_chunks.sql).

-- Long documents (worker/pipeline/pieces.py): a document of a chunked target longer than one
-- piece (EMBED_PIECE_TOKENS) is embedded and committed a piece at a time; a document over the
-- ceiling (EMBED_MAX_DOCUMENT_BYTES) is not embedded at all. One row per such document:
--   in_progress   its chunks 0 .. chunks_done - 1 are those of the content whose md5 is
--                 `digest` under the definition `target_version`, committed. Written in the transaction of each piece's chunk write;
--                 a worker continues from it after a restart, and a worker that finds it
--                 changed (someone else wrote the document since) starts the document over.
--                 Removed with the write of the document's last piece, and by any write of its
--                 chunks that is not a piece.
--   over_ceiling  the content whose md5 is `digest` is `bytes` long, over the worker's ceiling
--                 `ceiling_bytes`; its job failed into embeddings.failures. Removed when the
--                 document is written, cleared or deleted.
--   no_text       the content whose md5 is `digest` (`bytes` long) holds no text to embed (an
--                 empty page, a PDF of images only): settled, with no chunk. sweep() does not
--                 queue it again, nor the verifying sweep while its content is that one
--                 (sql/60_sweep.sql: no_text_keys()). Replaced when the document is written,
--                 removed when it is deleted.
-- Row keys are the worker's canonical keys (text), as embeddings.failures' jobs carry them.
CREATE TABLE IF NOT EXISTS embeddings.documents (
    target_id        integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    row_key          text NOT NULL,
    digest           text NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_progress', 'over_ceiling', 'no_text')),
    bytes            bigint NOT NULL,
    chunks_done      integer NOT NULL DEFAULT 0,
    -- the chunks so far, scaled by the share of the text read so far (the splitter reads a
    -- long document as far as the next piece needs)
    chunks_estimated integer,
    ceiling_bytes    bigint,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- the target's definition (embeddings.targets.version) the chunks were split under: after
    -- watch() with other chunk settings or another model, progress under the old one is void
    target_version   integer NOT NULL,
    PRIMARY KEY (target_id, row_key)
);
COMMENT ON TABLE embeddings.documents IS 'Long documents of chunked targets embedded in pieces, documents over the ceiling and documents with no text; written by embed-worker';

