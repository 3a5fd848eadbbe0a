"""embed-worker: a Postgres-native embedding worker.

Rows go into Postgres; moments later their embeddings are in the same rows. pgmq queues the
work, pgvector stores the vectors, and this package embeds text on the CPU with onnxruntime.
"""

from importlib import metadata

try:
    # The installed distribution's version: pyproject.toml is its only source.
    __version__ = metadata.version("embed-worker")
except metadata.PackageNotFoundError:  # the package imported from a checkout never installed
    __version__ = "0+unknown"
