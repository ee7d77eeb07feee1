"""What the API and the workers share, and neither owns:

- ``config.py``: the one `Config`, the only reader of the environment;
- ``contract/``: task names, the job payload, failures and their statuses, result
  formats, the Redis keys and every Lua script run on them;
- ``registry.py`` (models and their queues), ``tenants.py`` (keys, tenants, whose a job
  is), ``webhooks.py`` (endpoints, events, signatures);
- ``broker/``: Celery's shared settings, the queues as declared, the Redis transport;
- ``storage/``: every Redis client, the file store, batch lines' records;
- ``telemetry/``: traces and logs.

Both sides import this package; neither imports the other.
"""
