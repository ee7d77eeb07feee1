"""OpenAI's list of models (``/v1/models``)."""
