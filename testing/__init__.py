"""The harness the tests and the benchmark share: a fake OpenAI-compatible model
server, process helpers, cluster helpers, an OTLP collector, a webhook receiver."""
