"""The control plane's request bodies and answers, as the ``openai`` SDK's admin client
sends and reads them (``openai/types/admin/organization/``): each answer has exactly the
fields and ``object`` names of the SDK's type of the same name.

Bodies are strict about types and limits (a name is a string of 1 to 256 characters,
without control characters, which PostgreSQL cannot store as text) and lenient about
what the SDK may add; a field the gateway cannot honour (data residency, an external
key, scopes) is refused naming it, never silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from api.native.types import MODEL_PATTERN
from shared.control.models import (
    NAME_MAX,
    AdminKey,
    AuditEvent,
    ModelPermissions,
    Project,
    ProjectKey,
    RateLimit,
    ServiceAccount,
    SpendLimit,
)
from shared.model_access import DENY_LIST
from shared.tenants import Tenant


def _a_name(name: str) -> str:
    if not name.strip():
        raise ValueError("a name needs a character other than spaces")
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        raise ValueError("a name holds no control character (NUL, line breaks, tabs, ...)")
    return name


Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX), AfterValidator(_a_name)]
# At most ten years: a key that does not expire is asked for by leaving it out.
ExpiresIn = Annotated[int, Field(ge=1, le=10 * 365 * 86400)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _unsupported(name: str, value: Any) -> None:
    if value not in (None, [], ""):
        raise ValueError(f"{name} is not supported by this gateway")


class CreateAdminKey(_Body):
    """``admin_api_keys.create``."""

    name: Name
    expires_in_seconds: ExpiresIn | None = None


class CreateProject(_Body):
    """``projects.create``."""

    name: Name
    external_key_id: str | None = None
    geography: str | None = None
    residency: str | None = None

    @field_validator("external_key_id", "geography", "residency")
    @classmethod
    def _not_here(cls, value: Any) -> Any:
        _unsupported("data residency and external keys", value)
        return value


class UpdateProject(_Body):
    """``projects.update``: the name (the other fields, if given, must be empty)."""

    name: Name | None = None
    external_key_id: str | None = None
    geography: str | None = None

    @field_validator("external_key_id", "geography")
    @classmethod
    def _not_here(cls, value: Any) -> Any:
        _unsupported("data residency and external keys", value)
        return value


class CreateServiceAccount(_Body):
    """``projects.service_accounts.create``: with its first key, unless
    `create_service_account_only`."""

    name: Name
    create_service_account_only: bool | None = None
    expires_in_seconds: ExpiresIn | None = None

    @model_validator(mode="after")
    def _key_or_not(self) -> CreateServiceAccount:
        if self.create_service_account_only and self.expires_in_seconds is not None:
            raise ValueError("expires_in_seconds: cannot be used when create_service_account_only is true")
        return self


class CreateKey(_Body):
    """``projects.service_accounts.api_keys.create``."""

    name: Name | None = None
    expires_in_seconds: ExpiresIn | None = None
    scopes: list[Annotated[str, StringConstraints(max_length=128)]] | None = Field(None, max_length=64)

    @field_validator("scopes")
    @classmethod
    def _every_scope(cls, value: Any) -> Any:
        _unsupported("scopes (a key may do whatever its project may)", value)
        return value


# The models one list names at most: each is a model of the registry (or, with
# INNER_LLM_URL alone, a name requests give), so a longer list repeats itself.
MAX_MODEL_IDS = 256


class UpdateModelPermissions(_Body):
    """``projects.model_permissions.update``: the project may use `model_ids` only
    (allow_list), or every model but them (deny_list)."""

    mode: Literal["allow_list", "deny_list"]
    model_ids: list[Annotated[str, StringConstraints(pattern=MODEL_PATTERN)]] = Field(max_length=MAX_MODEL_IDS)


# The most cents a spend limit may be (a hundred million USD): its nano-USD fit Redis's
# integers many times over.
SPEND_LIMIT_MAX = 10_000_000_000


class UpdateSpendLimit(_Body):
    """``projects.spend_limit.update``: a hard limit of `threshold_amount` cents of USD a
    UTC month (0: the project may spend nothing, free models' requests refused too)."""

    threshold_amount: int = Field(ge=0, le=SPEND_LIMIT_MAX)
    currency: Literal["USD"]
    interval: Literal["month"]


def spend_limit(limit: SpendLimit, enforcing: bool) -> dict[str, Any]:
    """A ``project.spend_limit``; `enforcing`: the project's spend this month reached it
    (its requests are refused now)."""
    return {
        "object": "project.spend_limit",
        "threshold_amount": limit.threshold_amount,
        "currency": limit.currency,
        "interval": limit.interval,
        "enforcement": {"status": "enforcing" if enforcing else "inactive"},
    }


def listing(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page in OpenAI's list format."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def admin_key(key: AdminKey, value: str | None = None) -> dict[str, Any]:
    """An ``organization.admin_api_key`` (with its `value` once, as made)."""
    found = {
        "object": "organization.admin_api_key",
        "id": key.id,
        "name": key.name,
        "redacted_value": key.redacted_value,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "last_used_at": None,
        # The gateway has no users: a key's owner is the admin key that made it.
        "owner": {"id": key.created_by, "type": "admin_api_key"},
    }
    return found if value is None else {**found, "value": value}


def deleted(kind: str, object_id: str) -> dict[str, Any]:
    return {"object": f"{kind}.deleted", "id": object_id, "deleted": True}


def project(found: Project) -> dict[str, Any]:
    """An ``organization.project``."""
    return {
        "object": "organization.project",
        "id": found.id,
        "name": found.name,
        "created_at": found.created_at,
        "archived_at": found.archived_at,
        "status": found.status,
        "external_key_id": None,
        "residency": None,
    }


def declared_project(tenant: Tenant, created_at: int) -> dict[str, Any]:
    """A keys file's tenant as a project: its name is its id."""
    return {
        "object": "organization.project",
        "id": tenant.name,
        "name": tenant.name,
        "created_at": created_at,
        "archived_at": None,
        "status": "active",
        "external_key_id": None,
        "residency": None,
    }


def model_permissions(found: ModelPermissions | None) -> dict[str, Any]:
    """A ``project.model_permissions``; a project without any denies nothing."""
    mode, model_ids = (found.mode, list(found.model_ids)) if found is not None else (DENY_LIST, [])
    return {"object": "project.model_permissions", "mode": mode, "model_ids": model_ids}


def model_permissions_deleted(deleted: bool) -> dict[str, Any]:
    return {"object": "project.model_permissions.deleted", "deleted": deleted}


def service_account(account: ServiceAccount) -> dict[str, Any]:
    """An ``organization.project.service_account``."""
    return {
        "object": "organization.project.service_account",
        "id": account.id,
        "name": account.name,
        "role": account.role,
        "created_at": account.created_at,
    }


def new_key(key: ProjectKey, value: str) -> dict[str, Any]:
    """A service account's key as made: its value, this once."""
    return {
        "object": "organization.project.service_account.api_key",
        "id": key.id,
        "name": key.name,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "value": value,
    }


def project_key(key: ProjectKey, owner: ServiceAccount, active: bool) -> dict[str, Any]:
    """An ``organization.project.api_key``; `active`: its project is not archived."""
    return {
        "object": "organization.project.api_key",
        "id": key.id,
        "name": key.name,
        "redacted_value": key.redacted_value,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        # The start of the last minute it was used in, as usage history has it (recorded
        # within USAGE_FLUSH_SECONDS of that minute's end: api/admin/usage_flush.py).
        "last_used_at": key.last_used_at,
        "owner": {
            "type": "service_account",
            "service_account": {
                "id": owner.id,
                "name": owner.name,
                "created_at": owner.created_at,
                "role": owner.role,
            },
        },
        "owner_project_access": "active" if active else "inactive",
    }


def audit_event(event: AuditEvent) -> dict[str, Any]:
    """An audit log entry: who (the admin key), what (its type and the type's details,
    under the type's name), when, on which object (and project)."""
    found: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "effective_at": event.effective_at,
        "actor": {"type": "api_key", "api_key": {"id": event.actor_id}},
        event.type: event.details,
    }
    if event.project_id is not None:
        found["project"] = {"id": event.project_id, "name": event.project_name}
    return found


# Rate limits per model. A limit is a whole number from 0 (not set: no limit of its own)
# up to 2**53 - 1 (what Redis's Lua, which counts them, holds exactly).
LIMIT_MAX = 2**53 - 1
Limit = Annotated[int, Field(ge=0, le=LIMIT_MAX)]
# The body's names of the limits, as the store's columns name them.
RATE_LIMITS = (
    "max_requests_per_1_minute", "max_tokens_per_1_minute", "max_requests_per_1_day", "batch_1_day_max_input_tokens",
)  # fmt: skip


class UpdateRateLimit(_Body):
    """``projects.rate_limits.update_rate_limit``: the limits given (0 clears one), the
    others as they were. Images and audio are not served here: a limit on them is refused."""

    max_requests_per_1_minute: Limit | None = None
    max_tokens_per_1_minute: Limit | None = None
    max_requests_per_1_day: Limit | None = None
    batch_1_day_max_input_tokens: Limit | None = None
    max_images_per_1_minute: int | None = None
    max_audio_megabytes_per_1_minute: int | None = None

    @field_validator("max_images_per_1_minute", "max_audio_megabytes_per_1_minute")
    @classmethod
    def _not_here(cls, value: Any) -> Any:
        _unsupported("limits on images and audio (this gateway serves neither)", value)
        return value

    def changes(self) -> dict[str, int]:
        """The limits given, by name."""
        return {name: getattr(self, name) for name in RATE_LIMITS if getattr(self, name) is not None}


def rate_limit(limit_id: str, model: str, found: RateLimit | None) -> dict[str, Any]:
    """A ``project.rate_limit``: the project's limits on `model` (`found`, None: none set).
    The SDK's type needs a number for requests and tokens per minute: 0 says none is set
    (as 0 clears one); the others are null when not set."""
    return {
        "object": "project.rate_limit",
        "id": limit_id,
        "model": model,
        "max_requests_per_1_minute": (found.max_requests_per_1_minute or 0) if found else 0,
        "max_tokens_per_1_minute": (found.max_tokens_per_1_minute or 0) if found else 0,
        "max_requests_per_1_day": found.max_requests_per_1_day if found else None,
        "batch_1_day_max_input_tokens": found.batch_1_day_max_input_tokens if found else None,
    }


def declared_rate_limit(limit_id: str, model: str, tenant: Tenant) -> dict[str, Any]:
    """A keys file's tenant's limits on `model`: its own requests and tokens per minute
    (over every model: none of its models may take more), 0 when it has none."""
    return {
        "object": "project.rate_limit",
        "id": limit_id,
        "model": model,
        "max_requests_per_1_minute": tenant.quotas.requests_per_minute or 0,
        "max_tokens_per_1_minute": tenant.quotas.tokens_per_minute or 0,
        "max_requests_per_1_day": None,
        "batch_1_day_max_input_tokens": None,
    }
