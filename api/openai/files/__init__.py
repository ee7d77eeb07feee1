"""OpenAI's Files API (``/v1/files``): the files batches read and write."""
