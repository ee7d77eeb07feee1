"""The workers' Celery app: ``celery -A tasks.app worker`` and ``celery -A tasks.app flower``."""

from celery import Celery

# The task bodies (jobs, webhook deliveries), the worker's wiring (signals, logging,
# shutdown), and the dead-letter queue's consumer and failure signal.
celery_app = Celery("llm", include=["tasks.llm", "tasks.webhook_delivery", "tasks.wiring", "tasks.dead_letters"])
celery_app.config_from_object("celeryconfig")
