"""The workers' Celery app: ``celery -A tasks.app worker`` and ``celery -A tasks.app flower``."""

from celery import Celery

# The task bodies (jobs, webhook deliveries), the worker's wiring (signals, logging,
# shutdown), and the dead-letter queue's consumer and failure signal. Every task is a
# WorkerTask: it reaches the process's Worker, which the wiring binds as it starts.
celery_app = Celery(
    "llm",
    include=["tasks.llm", "tasks.webhook_delivery", "tasks.wiring", "tasks.dead_letters"],
    task_cls="tasks.worker:WorkerTask",
)
celery_app.config_from_object("celeryconfig")
