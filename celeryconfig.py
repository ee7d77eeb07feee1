"""The workers' Celery settings by module name: ``app.config_from_object("celeryconfig")``.

Built from `shared.config.Config`, read once per process (tasks/settings.py:
`process_config`), so the workers read the same variables as the API. Names starting with "_" are not Celery settings.
"""

from tasks.settings import process_config as _process_config
from tasks.settings import worker_settings as _worker_settings

globals().update(_worker_settings(_process_config()))
