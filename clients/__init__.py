"""Clients of the gateway's HTTP API that import nothing of it: the batch command (python -m clients.batch)."""
