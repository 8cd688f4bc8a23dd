"""One log line when the telemetry collector goes away, one when it is back.

The OTLP exporters log a warning for every retry and an error for every
batch they give up on: with the collector (Jaeger) stopped, a worker's log
got a line every second or two for as long as it was away, burying
everything else. Spans are not lost for that reason alone (the batch
processor's queue is bounded; what does not fit is dropped), so one line
saying so is all an operator needs. `OutageNotice` filters the exporters'
loggers: it lets the first complaint through, reworded, and drops the rest
until an export succeeds again (`recovered`, which the exporters below call).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# The loggers the OTLP/HTTP exporters and the SDK's batch processors write to.
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics._internal.export",
)


class OutageNotice(logging.Filter):
    """Passes the first exporter warning of an outage (reworded), drops the rest until recovery."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.down = False
        self.dropped = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        with self._lock:
            if self.down:
                self.dropped += 1
                return False
            self.down = True
        first_line = record.getMessage().splitlines()[0][:300]
        record.msg = (
            "cannot export telemetry to %s (%s); spans and metrics are dropped until it "
            "answers again (said once; the next line says when it is back)"
        )
        record.args = (self.endpoint, first_line)
        record.exc_info = record.exc_text = None
        return True

    def recovered(self) -> None:
        with self._lock:
            was_down, dropped = self.down, self.dropped
            self.down, self.dropped = False, 0
        if was_down:
            log.warning(
                "exporting telemetry to %s again (%d exporter messages left out)",
                self.endpoint,
                dropped,
            )


def install(endpoint: str) -> OutageNotice:
    """A notice on every exporter logger; exporters report successes to it."""
    notice = OutageNotice(endpoint)
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(notice)
    return notice


def uninstall(notice: OutageNotice) -> None:
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).removeFilter(notice)


def span_exporter(endpoint: str, notice: OutageNotice, **options: Any) -> Any:
    """An OTLP/HTTP span exporter that tells `notice` when an export succeeds."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    class Exporter(OTLPSpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            result = super().export(spans)
            if result is SpanExportResult.SUCCESS:
                notice.recovered()
            return result

    return Exporter(endpoint=endpoint, **options)


def metric_exporter(endpoint: str, notice: OutageNotice) -> Any:
    """An OTLP/HTTP metric exporter that tells `notice` when an export succeeds."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    class Exporter(OTLPMetricExporter):
        def export(self, *args: Any, **kwargs: Any) -> MetricExportResult:
            result = super().export(*args, **kwargs)
            if result is MetricExportResult.SUCCESS:
                notice.recovered()
            return result

    return Exporter(endpoint=endpoint)
