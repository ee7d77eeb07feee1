"""Which models of the registry a project may use (its model permissions, set through the
Administration API's ``projects.model_permissions``), and the registry as that project
sees it.

A project's permissions are a mode and a list of model ids: ``allow_list`` (those
models only) or ``deny_list`` (every model but those). A project without permissions
(and every tenant of the keys file) may use every model. An id is a name of the
registry, a model's own or one of its aliases, and stands for the model whatever name
a request asks for it by: denying ``small`` denies its alias ``qwen-1.5b`` too, and
allowing the alias allows ``small``. Otherwise a list could be walked around by asking
for the same model under another of its names.

To a project, a model it may not use is a model the registry does not list: the
registry it sees (`permitted`) holds only the models it may use, so a forbidden model
fails exactly as an unknown one (the same 404, the same message, listing only the
models it may use), and ``/v1/models`` lists only those. With ``INNER_LLM_URL`` alone
(no registry: every name goes to the one server, which may serve several), the ids are
the names requests give, compared as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.registry import Model, Registry, UnknownModel

ALLOW_LIST = "allow_list"
DENY_LIST = "deny_list"
MODES = (ALLOW_LIST, DENY_LIST)


@dataclass(frozen=True)
class ModelAccess:
    """A project's model permissions, as an API process holds them."""

    mode: str  # ALLOW_LIST | DENY_LIST
    model_ids: frozenset[str]

    def allows(self, names: Iterable[str]) -> bool:
        """Whether the model of those `names` (its name and aliases) may be used."""
        listed = not self.model_ids.isdisjoint(names)
        return listed if self.mode == ALLOW_LIST else not listed


@dataclass(frozen=True, kw_only=True)
class PermittedRegistry(Registry):
    """The registry as a project with model permissions sees it: `models` holds only those
    it may use, so routing, listing and the unknown-model error see nothing else. The
    default model stays the deployment's: a request naming no model, of a project that
    may not use it, is refused as if it had named it."""

    access: ModelAccess

    def route(self, requested: str | None) -> Model:
        if self.passthrough:
            name = requested or self.default.name
            if not self.access.allows((name,)):
                raise UnknownModel(name, self.names())
            return self.default
        if not requested and not any(model is self.default for model in self.models):
            raise UnknownModel(self.default.name, self.names())
        return super().route(requested)

    def names(self) -> list[str]:
        if self.passthrough:
            return [name for name in super().names() if self.access.allows((name,))]
        return super().names()


def permitted(registry: Registry, access: ModelAccess | None) -> Registry:
    """`registry` as a project with `access` sees it (itself, for a project without permissions)."""
    if access is None:
        return registry
    models = registry.models if registry.passthrough else tuple(m for m in registry.models if access.allows(m.names))
    return PermittedRegistry(models, registry.default, registry.passthrough, access=access)


def serves(registry: Registry, name: str) -> bool:
    """Whether a request naming `name` is served by `registry` (a project's view of it:
    with ``INNER_LLM_URL`` alone, what ``/v1/models`` lists is filtered by it)."""
    try:
        registry.route(name)
    except UnknownModel:
        return False
    return True
