"""OpenAI's embeddings (``/v1/embeddings``)."""
