"""Celery settings by module name: ``app.config_from_object("celeryconfig")``.

Built from `settings.Config`, so the workers read the same variables as the API.
"""

from settings import Config, celery_settings

globals().update(celery_settings(Config.read_from_env()))
del Config, celery_settings
