"""The Prometheus side of the metrics: OpenTelemetry's Prometheus reader and the scrape body.

OpenTelemetry's `PrometheusMetricReader` registers a collector with
prometheus_client's registry; the worker's web server (streams/worker/app.py)
answers `GET /metrics` with `exposition(accept)`, so metrics share the web
port with the health endpoints instead of opening one of their own. The
Prometheus names are OpenTelemetry's conversion of the instrument names in
metrics.py: dots become underscores, seconds get `_seconds` and counters
end in `_total` (docs/operations.md lists them all).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

_reader: Any = None


def reader() -> Any:
    """A new Prometheus reader for the meter provider (one per process)."""
    global _reader
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    _reader = PrometheusMetricReader()
    return _reader


def forget() -> None:
    """The provider shut down, and with it the reader (which unregistered itself)."""
    global _reader
    _reader = None


def enabled() -> bool:
    return _reader is not None


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The scrape body in the format `accept` asks for, and its content type."""
    encode, content_type = choose_encoder(accept or "")
    return encode(REGISTRY), content_type
