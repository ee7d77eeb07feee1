"""The HTTP edge: the route class every endpoint uses, errors and their statuses,
strict JSON bodies, server-sent events."""
