"""The worker side ("LLM-core"): Celery tasks that call the model server."""
