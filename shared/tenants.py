"""Tenants: who a request is for, what share of the workers it gets, and what it may spend.

API keys belong to tenants. The keys file (``API_KEYS_FILE``) is either a list of keys,
one per line (``#`` comments), all of the default tenant, or a YAML (or JSON) document::

    tenants:
      - name: research               # [a-z0-9_-], at most 64
        weight: 3                    # its share of a model's workers when several wait
        admin: false                 # an admin key sees every tenant's usage
        keys: ["sk-research-1"]      # the keys themselves, or
        key_digests: ["sha256:5e88…"]  # their SHA-256 (hex), so the file holds no secret
        quotas:
          requests_per_minute: 600
          tokens_per_minute: 200000  # prompt and completion tokens, as the model server counted
          tokens_per_day: 5000000    # a UTC day
          jobs_in_flight: 100        # accepted and not yet answered
          max_priority: 7            # its jobs' highest priority (TENANT_MAX_PRIORITY by default)
          streams_in_flight: 100     # streams read at once (STREAMS_IN_FLIGHT when not given)
          file_bytes: 10000000000    # bytes of uploaded files it keeps in the file store
          batches_in_flight: 10      # its batches not finished

Keys of ``API_KEYS`` belong to the tenant ``default`` (weight 1, ``RATE_LIMIT_PER_MINUTE``
its requests per minute). Projects made at runtime (the control plane, shared/control/) are
tenants too, named by their id (``proj_…``); an API process holds them and their keys in
memory (`Directory`), beside the file's, and the admin API keys (``ADMIN_API_KEYS``, and
those made at runtime) that manage them. With a document of tenants, a tenant's jobs ask for a priority
up to its ``max_priority`` (by default the deployment's, ``TENANT_MAX_PRIORITY``), so no
team jumps every other's jobs; without one, the one tenant has every priority. A tenant
is named on its jobs, log lines, metrics and job statuses; a key never is.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.model_access import ModelAccess

DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Between a tenant's name and its job's id in the id the job has in Redis and on the
# broker (its Celery task id). A client's job_id cannot hold it (JOB_ID_PATTERN), so no
# job_id of one tenant names another's job.
JOB_KEY_SEPARATOR = "~"


def job_key(tenant: str, job_id: str) -> str:
    """The id a tenant's job has in Redis and on the broker (its Celery task id): the
    default tenant's jobs keep their job_id (a deployment without tenants, and Python
    clients sending tasks themselves, see no change); another tenant's is
    ``<tenant>~<job_id>``, so the same job_id from two tenants names two jobs."""
    return job_id if tenant == DEFAULT_TENANT else f"{tenant}{JOB_KEY_SEPARATOR}{job_id}"


def tenant_of(key: str) -> str:
    """Whose job a job's key (`job_key`) names."""
    tenant, separator, _ = key.partition(JOB_KEY_SEPARATOR)
    return tenant if separator else DEFAULT_TENANT


class Quotas(BaseModel):
    """What a tenant may spend; None: no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    jobs_in_flight: int | None = Field(None, ge=1, le=100_000)
    # The highest priority its jobs run at (0 .. 9): one asking for more runs at it.
    max_priority: int | None = Field(None, ge=0, le=9)
    streams_in_flight: int | None = Field(None, ge=1, le=100_000)  # None: the deployment's STREAMS_IN_FLIGHT
    # The bytes of uploaded files (batches' input files) it keeps in the file store.
    file_bytes: int | None = Field(None, ge=1)
    # Its batches not finished (validating, in progress, finalizing): each is read whole
    # into the memory of the API process driving it.
    batches_in_flight: int | None = Field(None, ge=1)


class _TenantEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TENANT_PATTERN)
    weight: float = Field(1.0, gt=0, le=1000)
    admin: bool = False
    keys: list[str] = Field(default_factory=list)
    key_digests: list[str] = Field(default_factory=list)
    quotas: Quotas = Quotas()

    @field_validator("key_digests")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        for digest in digests:
            if not re.fullmatch(r"(sha256:)?[0-9a-f]{64}", digest.strip().lower()):
                raise ValueError("a key digest is the key's SHA-256 in hex (64 characters), 'sha256:' before it or not")
        return digests


class _TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: list[_TenantEntry] = Field(min_length=1)


@dataclass(frozen=True)
class ModelLimits:
    """A project's rate limits on one model of the registry (the Administration API's
    ``project.rate_limit``); 0: that limit is not set. Counted in Redis across API
    processes (api/tenancy/quotas.py, the batch keeper for batches' input tokens)."""

    requests_per_minute: int = 0  # max_requests_per_1_minute
    tokens_per_minute: int = 0  # max_tokens_per_1_minute: prompt and completion, as the model server counted
    requests_per_day: int = 0  # max_requests_per_1_day: a UTC day
    batch_input_tokens_per_day: int = 0  # batch_1_day_max_input_tokens: its batches' input, estimated

    @property
    def interactive(self) -> bool:
        """Whether a limit on requests or tokens is set (those admission checks)."""
        return bool(self.requests_per_minute or self.tokens_per_minute or self.requests_per_day)


@dataclass(frozen=True)
class Tenant:
    """One tenant: its name, weight, quotas, and whether it is an admin."""

    name: str
    weight: float = 1.0
    admin: bool = False
    quotas: Quotas = field(default_factory=Quotas)
    # The id of the key a request presented, where its key has one (a project's key made
    # at runtime: each has its tenant so marked, `Grant`); its jobs' usage is counted to it.
    key_id: str = ""
    # A project's rate limits, by the registry's name of the model (only models with one set).
    model_limits: Mapping[str, ModelLimits] = field(default_factory=dict, hash=False)
    # The models it may use (a project's model permissions); None: every model.
    models: ModelAccess | None = None
    # A project's hard spend limit, in cents of USD a UTC month (None: none): its requests
    # are refused once its month's spend reaches it (api/tenancy/quotas.py).
    spend_limit: int | None = None


@dataclass(frozen=True)
class Owner:
    """Whose files and batches a request sees: its tenant's (with API keys on)."""

    name: str | None  # written on what the request creates (None: no keys configured)
    # What its tenant's files and batches were owned as before tenants owned them: its keys'.
    also: frozenset[str] = frozenset()
    every: bool = False  # an admin key, or no keys: every tenant's

    def sees(self, found: Any) -> bool:
        """Whether a file or batch owned as `found` is the request's to see."""
        return self.every or (found is not None and (found == self.name or found in self.also))


EVERYONE = Owner(None, every=True)


class BadTenants(ValueError):
    """The keys file cannot be read as tenants: the API does not start."""


def digest(key: str) -> bytes:
    """The SHA-256 of a key, as keys are kept and compared."""
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Grant:
    """What a project's key made at runtime opens: its project's tenant, until `expires_at`
    (Unix seconds; None: never)."""

    tenant: Tenant
    key_id: str
    expires_at: float | None = None

    def __post_init__(self) -> None:
        # The tenant its requests are for names this key, so their jobs carry its id
        # (made once, as the directory is read, not per request).
        if self.tenant.key_id != self.key_id:
            object.__setattr__(self, "tenant", replace(self.tenant, key_id=self.key_id))

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class AdminGrant:
    """An admin API key: the only kind that reaches ``/v1/organization/*``; its id and name
    are what the audit log says did each action."""

    key_id: str
    name: str
    expires_at: float | None = None

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Directory:
    """The projects and keys made at runtime, as one API process holds them (read from the
    control plane's database, replaced whole when it changes: api/tenancy/control_sync.py)."""

    version: int = 0
    # By id, archived ones too (their jobs are still theirs).
    projects: Mapping[str, Tenant] = field(default_factory=dict)
    keys: Mapping[bytes, Grant] = field(default_factory=dict)  # by digest: active projects' keys, not deleted
    admin_keys: Mapping[bytes, AdminGrant] = field(default_factory=dict)  # by digest: those not deleted
    archived: frozenset[str] = frozenset()  # the ids of the archived projects (they take no turns)


@dataclass
class Tenants:
    """The tenants and their keys (as digests): the keys file's and ``API_KEYS``' (fixed at
    start), and the control plane's (`runtime`, replaced whole as it changes)."""

    by_digest: dict[bytes, Tenant] = field(default_factory=dict)
    named: dict[str, Tenant] = field(default_factory=dict)
    admins: dict[bytes, AdminGrant] = field(default_factory=dict)  # ADMIN_API_KEYS'
    runtime: Directory = field(default_factory=Directory)

    @property
    def keyed(self) -> bool:
        """Whether requests need a key (``API_KEYS`` or the keys file has one)."""
        return bool(self.by_digest)

    def get(self, name: str) -> Tenant:
        """The tenant of that name; the default tenant's settings for a name not configured."""
        return (
            self.named.get(name)
            or self.runtime.projects.get(name)
            or self.named.get(DEFAULT_TENANT)
            or Tenant(DEFAULT_TENANT)
        )

    def find(self, key: bytes, now: float) -> Tenant | None:
        """The tenant of the key whose digest is `key` (None: no such key, or it expired).

        A dict lookup, not a loop comparing every digest in constant time: the dict
        compares the full 64-bit hash of the digest first (SipHash, keyed per process) and
        its bytes only when those hashes are equal, so how long a lookup takes says
        nothing about how much of a stored digest a guess shares; and what it compares is
        the SHA-256 of the key, never the key. A loop would cost O(keys) per request."""
        found = self.by_digest.get(key)
        if found is not None:
            return found
        grant = self.runtime.keys.get(key)
        return grant.tenant if grant is not None and grant.live(now) else None

    def admin(self, key: bytes, now: float) -> AdminGrant | None:
        """The admin API key whose digest is `key` (None: not one, or it expired)."""
        grant = self.admins.get(key) or self.runtime.admin_keys.get(key)
        return grant if grant is not None and grant.live(now) else None

    def _add(self, tenant: Tenant, digests: list[bytes]) -> None:
        if tenant.name in self.named and self.named[tenant.name] != tenant:
            raise BadTenants(f"tenant {tenant.name!r} is declared twice")
        self.named[tenant.name] = tenant
        for key in digests:
            if key in self.by_digest and self.by_digest[key].name != tenant.name:
                raise BadTenants(f"a key of tenant {tenant.name!r} is also {self.by_digest[key].name!r}'s")
            self.by_digest[key] = tenant


def configured_admin(key: str) -> AdminGrant:
    """An admin key of ``ADMIN_API_KEYS``: named in the audit log by its digest's first 16
    hex digits (``key_cfg_…``), as no id was made for it."""
    short = digest(key).hex()[:16]
    return AdminGrant(f"key_cfg_{short}", f"ADMIN_API_KEYS key_cfg_{short}")


def load_tenants(
    api_keys: str, keys_file: str, default_rpm: int = 0, max_priority: int = 9, admin_keys: str = ""
) -> Tenants:
    """The tenants of ``API_KEYS`` (the default tenant) and of the keys file, and the admin
    keys of `admin_keys` (``ADMIN_API_KEYS``, comma-separated); each tenant of a document
    of tenants without a ``max_priority`` of its own gets `max_priority`."""
    tenants = Tenants()
    default = Tenant(DEFAULT_TENANT, quotas=Quotas(requests_per_minute=default_rpm or None))
    tenants.named[DEFAULT_TENANT] = default
    plain = [key.strip() for key in api_keys.split(",") if key.strip()]
    if keys_file:
        text = Path(keys_file).read_text()
        document = _document(text)
        if document is None:
            plain += [line.split("#", 1)[0].strip() for line in text.splitlines()]
        else:
            try:
                entries = _TenantsFile.model_validate(document).tenants
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise BadTenants(f"{keys_file}: {where}: {first['msg']}") from None
            for entry in entries:
                quotas = entry.quotas
                if entry.name == DEFAULT_TENANT and quotas.requests_per_minute is None and default_rpm:
                    quotas = quotas.model_copy(update={"requests_per_minute": default_rpm})
                if quotas.max_priority is None:
                    quotas = quotas.model_copy(update={"max_priority": max_priority})
                tenant = Tenant(entry.name, entry.weight, entry.admin, quotas)
                digests = [digest(key.strip()) for key in entry.keys if key.strip()]
                digests += [bytes.fromhex(d.strip().lower().removeprefix("sha256:")) for d in entry.key_digests]
                if not digests:
                    raise BadTenants(f"{keys_file}: tenant {entry.name!r} has no keys")
                if entry.name == DEFAULT_TENANT:
                    tenants.named[DEFAULT_TENANT] = tenant
                else:
                    tenants._add(tenant, digests)
                    continue
                for key in digests:
                    tenants.by_digest[key] = tenant
            default = tenants.named[DEFAULT_TENANT]
            if default.quotas.max_priority is None:  # not declared: API_KEYS' keys, or none
                capped = default.quotas.model_copy(update={"max_priority": max_priority})
                tenants.named[DEFAULT_TENANT] = replace(default, quotas=capped)
    default = tenants.named[DEFAULT_TENANT]
    for key in plain:
        if key:
            found = tenants.by_digest.get(digest(key))
            if found is not None and found.name != DEFAULT_TENANT:
                raise BadTenants(f"a key of API_KEYS is also tenant {found.name!r}'s")
            tenants.by_digest[digest(key)] = default
    for key in (key.strip() for key in admin_keys.split(",")):
        if not key:
            continue
        if digest(key) in tenants.by_digest:
            raise BadTenants(f"a key of ADMIN_API_KEYS is also tenant {tenants.by_digest[digest(key)].name!r}'s")
        tenants.admins[digest(key)] = configured_admin(key)
    return tenants


def _document(text: str) -> dict[str, Any] | None:
    """The keys file as a YAML or JSON document of tenants, or None for a list of keys."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            found = json.loads(stripped)
        except ValueError as exc:
            raise BadTenants(f"keys file: not JSON: {exc}") from None
        return found if isinstance(found, dict) else None
    if not re.search(r"^tenants\s*:", text, re.MULTILINE):
        return None
    try:
        found = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadTenants(f"keys file: not YAML: {exc}") from None
    return found if isinstance(found, dict) else None
