"""The Responses service as api/main.py builds it, on the job parts of tests/unit/api/edge.py
(a fake Redis and broker) and a file store in a test's own folder."""

from __future__ import annotations

from pathlib import Path

from api.jobs.webhook_events import WebhookEvents
from api.openai.conversations.serving import Conversations
from api.openai.responses.input_tokens import TokenCounter
from api.openai.responses.sealing import CompactionSeal
from api.openai.responses.serving import Responses
from api.openai.responses.store import ResponseStore
from api.tenancy.guard import load_tenants_of
from shared.contract.responses import record_ttl
from shared.registry import load_registry
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from shared.storage.response_files import KeptResponses
from tests.unit.api.edge import Parts


def responses_of(parts: Parts, root: Path) -> Responses:
    """The service over `parts`, its stored responses and conversations under `root`."""
    config, store = parts.config, FileStore(str(root))
    records = ResponseStore(config, parts.redis, KeptResponses(store, record_ttl(config)))  # type: ignore[arg-type]
    seal = CompactionSeal(config)
    return Responses(config, parts.routing, parts.runner, parts.store, records, load_registry(config),
                     load_tenants_of(config), WebhookEvents(config, parts.queue), TokenCounter(config),
                     seal, Conversations(ConversationFiles(store), seal))  # fmt: skip
