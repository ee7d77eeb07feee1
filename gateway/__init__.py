"""What the API and the workers share: the one `Config`, the model registry, the
contract between the two sides, logging, Celery's settings and the Redis broker transport.

Both sides import this package; neither imports the other.
"""
