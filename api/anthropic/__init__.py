"""Anthropic's Messages API, on the gateway's queue (docs/anthropic.md)."""
