"""The broker as both sides see it: Celery's shared settings, the queues as declared, the Redis transport,
the dead letters listed and replayed."""
