"""The model server as the worker sees it: `ModelClient` (client.py: retries, deadlines,
context fitting) over one keep-alive connection per thread (http.py), the request and
answer shapes (protocol.py), a streamed answer read piece by piece (stream.py), and
stopping a call from another thread (cancel.py)."""

from tasks.model.cancel import Cancel, Cancelled
from tasks.model.client import ModelClient
from tasks.model.protocol import ChatRequest, Completion

__all__ = ["Cancel", "Cancelled", "ChatRequest", "Completion", "ModelClient"]
