"""What operators watch: Prometheus metrics, Server-Timing, scaling signals, readiness."""
