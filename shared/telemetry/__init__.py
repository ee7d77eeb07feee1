"""Traces (OpenTelemetry) and logs (JSON lines with the job's context)."""
