"""Tracing, metrics and log correlation (OpenTelemetry)."""
