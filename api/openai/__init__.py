"""OpenAI-compatible API, one folder per feature: its router, its wire types, its logic."""
