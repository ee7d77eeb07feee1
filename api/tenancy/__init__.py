"""Tenants: keys and rate limits (the guard), quotas, fair share of a busy model, usage."""
