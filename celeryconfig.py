"""The workers' Celery settings by module name: ``app.config_from_object("celeryconfig")``.

Built from `shared.config.Config` (tasks/settings.py), so the workers read the
same variables as the API. Names starting with "_" are not Celery settings.
"""

from shared.config import Config as _Config
from tasks.settings import worker_settings as _worker_settings

globals().update(_worker_settings(_Config.read_from_env()))
