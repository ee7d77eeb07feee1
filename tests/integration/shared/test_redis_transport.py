"""The Redis broker's transport (shared/broker/redis_transport.py) against the real Redis."""

from __future__ import annotations

import pytest
from celery import Celery

from shared.broker.settings import celery_settings
from shared.config import Config

pytestmark = pytest.mark.integration


def test_the_redis_broker_makes_one_client_per_channel(redis_address: tuple[str, int]) -> None:

    config = Config(_env_file=None, redis_host=redis_address[0], redis_port=redis_address[1])  # type: ignore[call-arg]
    app = Celery("check", set_as_current=False)
    app.conf.update(celery_settings(config))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert type(connection.transport).__module__ == "shared.broker.redis_transport"
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.ping()
        channel._disconnect_pools()  # as after a fork: a new pool, and a client of it
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool and third.ping()
