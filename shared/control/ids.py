"""The ids and secrets the control plane makes: ``proj_…``, ``svc_acct_…``, ``key_…``
ids, and API keys (``sk-proj-…`` for a project, ``sk-admin-…`` for the organization),
of which only the SHA-256 digest and a redacted form are kept."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from shared.tenants import digest

PROJECT = "proj_"
SERVICE_ACCOUNT = "svc_acct_"
KEY = "key_"
AUDIT_LOG = "audit_log-"

PROJECT_KEY = "sk-proj-"
ADMIN_KEY = "sk-admin-"

# A project's id is its tenant's name (shared/tenants.py TENANT_PATTERN: [a-z0-9_-], at
# most 64): 24 hex digits after its prefix, 96 random bits.
ID_HEX = 24
# What the paths take as an id (a project's: a keys file's tenant's name too): a wrong
# one is a 400 naming the parameter, before any lookup.
PROJECT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SERVICE_ACCOUNT_ID_PATTERN = r"^svc_acct_[A-Za-z0-9]{1,64}$"
KEY_ID_PATTERN = r"^key_[A-Za-z0-9]{1,64}$"


def new_id(prefix: str) -> str:
    """A new id: `prefix` and 24 random hex digits."""
    return prefix + secrets.token_hex(ID_HEX // 2)


@dataclass(frozen=True)
class NewKey:
    """A key just made: its value (shown once), its digest and redacted form (kept)."""

    value: str
    digest: bytes
    redacted: str


def new_key(prefix: str) -> NewKey:
    """A new API key: `prefix` and 256 random bits (43 URL-safe characters)."""
    value = prefix + secrets.token_urlsafe(32)
    return NewKey(value, digest(value), redacted(value, prefix))


def redacted(value: str, prefix: str) -> str:
    """A key as lists show it: its prefix and its last four characters."""
    return f"{prefix}...{value[-4:]}"
