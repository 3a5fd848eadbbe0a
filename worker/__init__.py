"""embed-worker: a Postgres-native embedding worker.

Rows go into Postgres; moments later their embeddings are in the same rows. pgmq queues the
work, pgvector stores the vectors, and this package embeds text on the CPU with onnxruntime.
"""

__version__ = "0.1.0"
