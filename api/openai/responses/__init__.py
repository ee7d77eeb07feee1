"""OpenAI's Responses API (``/v1/responses``) on the queue: a response is a chat job."""
