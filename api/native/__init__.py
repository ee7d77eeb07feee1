"""The spec's (ProtoLLM-compatible) API: /generate, /chat_completion, /jobs, /models: routers, wire types, answers."""
