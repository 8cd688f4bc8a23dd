"""Run, training, pool and dead-letter metrics, exported over OTLP when asked for.

Jaeger stores traces only, so metrics are off unless `OTEL_METRICS_EXPORTER`
is `otlp`; the endpoint is `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`, and the export interval the
SDK's own `OTEL_METRIC_EXPORT_INTERVAL`. The recording functions below use
only the OpenTelemetry API: without a configured SDK they cost a no-op call,
and instruments created before `configure` start recording once it runs.
Instrument names and attributes live here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

METER_NAME = "thunderhelm"
log = logging.getLogger(__name__)


class PoolStatsLike(Protocol):
    """What the gauges read from `thunderhelm.ga.pool.interpreter_pool.InterpreterPool.stats()`."""

    @property
    def busy(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def queued(self) -> int: ...


PoolStatsSource = Callable[[], PoolStatsLike | None]

_meter = metrics.get_meter(METER_NAME)
_runs = _meter.create_counter(
    "thunderhelm.runs", unit="{run}", description="Runs that ended, by outcome"
)
_run_duration = _meter.create_histogram(
    "thunderhelm.run.duration", unit="s", description="Run duration, acceptance to end"
)
_generation_duration = _meter.create_histogram(
    "thunderhelm.generation.duration", unit="s", description="Wall time of one generation"
)
_training_duration = _meter.create_histogram(
    "thunderhelm.candidate.training.duration",
    unit="s",
    description="Training time of one candidate, measured inside its interpreter",
)
_dead_letters = _meter.create_counter(
    "thunderhelm.dead_letters", unit="{record}", description="Inputs dead-lettered, by stage"
)

_lock = threading.Lock()
_pool_sources: list[PoolStatsSource] = []
_lag: dict[tuple[str, int], int] = {}
_provider: Any = None


def _pool_observations(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        with _lock:
            sources = list(_pool_sources)
        total = 0
        for source in sources:
            stats = source()
            if stats is not None:
                total += int(getattr(stats, field))
        return [Observation(total)]

    return observe


def _lag_observations(options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        lags = dict(_lag)
    return [
        Observation(
            lag, {"messaging.destination.name": topic, "messaging.destination.partition.id": str(p)}
        )
        for (topic, p), lag in lags.items()
    ]


_meter.create_observable_gauge(
    "thunderhelm.pool.interpreters.busy",
    [_pool_observations("busy")],
    unit="{interpreter}",
    description="Pool interpreters running a task",
)
_meter.create_observable_gauge(
    "thunderhelm.pool.interpreters.idle",
    [_pool_observations("idle")],
    unit="{interpreter}",
    description="Pool interpreters alive and waiting",
)
_meter.create_observable_gauge(
    "thunderhelm.pool.queue.depth",
    [_pool_observations("queued")],
    unit="{task}",
    description="Tasks waiting for a pool interpreter",
)
_meter.create_observable_gauge(
    "messaging.kafka.consumer.lag",
    [_lag_observations],
    unit="{message}",
    description="High watermark minus the next offset, as of the last record processed",
)


# --- recording (library side, API only) -----------------------------------------------


def run_ended(outcome: str, duration_s: float | None) -> None:
    """A run reached `succeeded`, `failed`, `cancelled` or `rejected`."""
    attributes = {"thunderhelm.run.outcome": outcome}
    _runs.add(1, attributes)
    if duration_s is not None:
        _run_duration.record(max(0.0, duration_s), attributes)


def generation_completed(duration_s: float) -> None:
    _generation_duration.record(max(0.0, duration_s))


def candidate_trained(duration_s: float, status: str) -> None:
    _training_duration.record(max(0.0, duration_s), {"thunderhelm.status": status})


def dead_lettered(stage: str, error_class: str, count: int = 1) -> None:
    _dead_letters.add(count, {"dlq.stage": stage, "error.type": error_class})


def consumer_lag(topic: str, partition: int, lag: int) -> None:
    with _lock:
        _lag[(topic, partition)] = max(0, lag)


def observe_pool(source: PoolStatsSource) -> None:
    """Report a pool's busy/idle interpreters and queue depth through `source`."""
    with _lock:
        _pool_sources.append(source)


def forget_pool(source: PoolStatsSource) -> None:
    with _lock:
        if source in _pool_sources:
            _pool_sources.remove(source)


# --- SDK (entry points only) ----------------------------------------------------------


def exporter_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP metrics URL, or None when metrics export is off (the default)."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if environ.get("OTEL_METRICS_EXPORTER", "none").strip().lower() != "otlp":
        return None
    explicit = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if explicit:
        return explicit
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318").rstrip("/")
    return f"{base}/v1/metrics"


def configure(resource: Resource, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK meter provider with an OTLP/HTTP exporter; False when off."""
    global _provider
    endpoint = exporter_endpoint(os.environ if environ is None else environ)
    if endpoint is None or _provider is not None:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint))
    _provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(_provider)
    log.info("exporting metrics to %s", endpoint)
    return True


def flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def shutdown() -> None:
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def run_status(status: str, data: Mapping[str, Any]) -> None:
    """Count a run whose folded status just became final (terminal events and rejections)."""
    if status not in ("succeeded", "failed", "cancelled", "rejected"):
        return
    result = data.get("result")
    duration = result.get("duration_s") if isinstance(result, Mapping) else None
    run_ended(status, float(duration) if isinstance(duration, int | float) else None)
