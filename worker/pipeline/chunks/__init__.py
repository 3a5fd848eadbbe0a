"""Chunked targets in the pipeline: split each document, embed only the chunks that changed,
write a document's chunks under the same stale-write guard as a row's vector.

The pipeline calls in at three stages, a module here for each (through
worker/pipeline/stores/chunked.py; but the load stage asks for the parses of all its targets'
documents itself, before any target's are read):

  parses.ask (load stage, after the content is loaded)  asks for the parse of every document
      of the batch, every target's at once, and waits once, a short while, for them.
  reading.prepare (load stage, then)  reads each document with the model's tokenizer as far
      as the batch's budget goes (EMBED_PIECE_TOKENS tokens of new chunks, at most MAX_CHUNKS
      chunks), looking up the vectors already stored for chunks with the same hash (text and
      model), which are then not embedded again. A document that does not fit whole is taken
      a piece at a time (worker/pipeline/pieces.py); documents past the budget are postponed
      (they go back to the queue, no attempt counted); a document over the ceiling
      (EMBED_MAX_DOCUMENT_BYTES) fails at once.
  embedding.embed (embed stage)  embeds the new chunks, at most EMBED_GROUP at a time so that a
      batch of thousands of chunks never holds thousands of encodings at once; a document whose
      text the model fails on fails alone.
  writing.store (write stage, inside the batch's write transaction)  orders this write of the
      documents after any other's (embeddings_internal.lock_documents(), per key, on a table of
      ours no one else may lock); the target's chunk write then keeps only those whose content
      md5 is still the one loaded, upserts their chunks (unchanged chunks at their position are not
      rewritten) and deletes the vanished ones (for a piece: only with the last one). It returns
      each row's outcome; the caller applies it as it applies its own.

The chunk table is read and written only through the target's functions, which run as the table's
owner (sql/32_access.sql): the worker role holds no privilege on it.
"""
