"""Kombu's Redis transport with one Redis client per channel, for the Valkey/Redis broker.

Kombu makes a new redis-py client for each command it sends outside its polling
loop: each publish, acknowledgement and task event. Making a client costs more in
redis-py 8 than the command (it copies the table of response callbacks): on the
Valkey broker it was a tenth of the worker's CPU per job (bench/). The clients all
use the channel's one connection pool, so one client per channel is the same, made
once. Celery's setting ``broker_transport`` names it (shared.broker.settings).

It also answers whether a queue exists by its length. Kombu asks Redis with EXISTS,
which its key-prefixing client does not prefix (kombu 5.7): with ``global_keyprefix``
set, as here, every queue looked missing, a passive declare failed, and the queue
depths the API counts (metrics, the lost-job sweep) read 0 however many jobs waited.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if self._pool is None and client is not None and getattr(self.connection, "client", None) is None:
            # Closing after a lost connection (its unacknowledged messages are put back):
            # the transport is detached, and Kombu could not make a pool (AttributeError,
            # which stops the worker); the last client's pool reconnects, or fails with a
            # connection error, which the consumer recovers from.
            return client
        pool = self.pool
        # A new pool (after a fork, or a reconnect) gets a new client.
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()
        return client

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        # Redis keeps no empty list: a queue exists while one of its lists holds a message.
        return bool(self._size(queue))


class Transport(redis.Transport):  # type: ignore[misc]
    Channel = Channel
