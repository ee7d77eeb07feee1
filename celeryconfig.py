"""Celery settings by module name: ``app.config_from_object("celeryconfig")``.

Built from `gateway.config.Config`, so the workers read the same variables as the API.
"""

from gateway.celery_settings import celery_settings
from gateway.config import Config

globals().update(celery_settings(Config.read_from_env()))
del Config, celery_settings
