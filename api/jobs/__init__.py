"""A job's path: run (submit, await), publish to the queue, the job records in Redis,
the result waiter, OpenAI's requests as jobs."""
