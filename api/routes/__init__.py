"""One router module per resource: the spec's endpoints, OpenAI's, jobs, files, batches,
usage, models, operations."""
