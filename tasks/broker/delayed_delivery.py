"""Celery's native delayed delivery (quorum queues' ETA and countdown), set up once per cluster.

With quorum queues a worker cannot hold a message for later by raising its prefetch
(their prefetch is per consumer and fixed), so Celery sends a delayed message (a
webhook delivery's next try) through RabbitMQ: exchanges and quorum queues whose
TTLs and dead-lettering bring it back to its queue when due. Celery's own step
sets them up through each URL of ``broker_url`` in turn, retrying each for about
18 s, on every start of the consumer; after a cluster node dies, each reconnect
would wait that long on the dead node's URL before taking jobs again. A cluster's
nodes share their exchanges and queues: set up through the node the consumer has
just connected to (it answers), and through the others in turn only if that fails.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer.delayed_delivery import DelayedDelivery
from kombu.transport.native_delayed_delivery import declare_native_delayed_delivery_exchanges_and_queues

log = logging.getLogger(__name__)


class ClusterDelayedDelivery(DelayedDelivery):
    """The consumer's delayed-delivery step (tasks/dead_letters.py's Consumer)."""

    def start(self, c: Any) -> None:
        app = c.app
        self._validate_configuration(app)
        try:
            self._set_up(app, c.connection)
            return
        except Exception as exc:  # noqa: BLE001 - lost meanwhile: through any node that answers
            log.warning("could not set up delayed delivery through the consumer's broker node (%s)", exc)
        urls = [url for url in str(app.conf.broker_url).split(";") if url.strip()]
        for url in urls:
            try:
                self._setup_delayed_delivery(c, url)
                return
            except Exception as exc:  # noqa: BLE001 - a node that is down: the next one
                log.warning("could not set up delayed delivery through one broker node (%s); trying the next", exc)
        log.error("delayed delivery not set up: no broker node answered; delayed messages wait in their worker")

    def _set_up(self, app: Any, connection: Any) -> None:
        declare_native_delayed_delivery_exchanges_and_queues(
            connection, app.conf.broker_native_delayed_delivery_queue_type
        )
        self._bind_queues(app, connection)
