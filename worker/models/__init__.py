"""Models: which are known by name, where their files are, downloading, loading them into
onnxruntime, and turning text into vectors. Nothing here touches the database."""
