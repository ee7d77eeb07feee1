"""The workers' Celery app: ``celery -A tasks.app worker`` and ``celery -A tasks.app flower``."""

from celery import Celery

celery_app = Celery("llm", include=["tasks.llm", "tasks.dead_letters"])
celery_app.config_from_object("celeryconfig")
