"""One router module per resource: the spec's endpoints, OpenAI's, jobs, models, operations."""
