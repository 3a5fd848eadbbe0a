"""Remote models: an OpenAI-compatible /embeddings endpoint or the Hugging Face Inference API,
behind the same interface as a local Embedder (docs/providers.md)."""
