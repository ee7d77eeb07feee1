"""The broker as both sides see it: Celery's shared settings, the queues as declared, the Redis transport."""
