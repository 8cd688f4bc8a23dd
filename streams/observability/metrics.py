"""Run, training, pool and dead-letter metrics: Prometheus by default, OTLP when asked for.

The worker serves them in the Prometheus text format at `/metrics` on its web
port (OpenTelemetry's Prometheus exporter, `THUNDERHELM_METRICS=false` turns
it off). Jaeger stores traces only, so OTLP export is off unless
`OTEL_METRICS_EXPORTER` lists `otlp`; the endpoint is
`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` +
`/v1/metrics`, and the export interval the SDK's own
`OTEL_METRIC_EXPORT_INTERVAL`. The recording functions below use only the
OpenTelemetry API: without a configured SDK they cost a no-op call, and
instruments created before `configure` start recording once it runs.
Instrument names and attributes live here and nowhere else (docs/operations.md
lists them with their Prometheus names).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

from thunderhelm.schemas.event_data import EventData, RunEnded
from thunderhelm.streams.domain import saga
from thunderhelm.streams.observability import export_outage

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
# A gauge's attributes as a hashable key: (name, value) pairs.
AttributeKey = tuple[tuple[str, str], ...]

_meter = metrics.get_meter(METER_NAME)
_runs = _meter.create_counter(
    "thunderhelm.runs", unit="{run}", description="Runs that ended, by outcome"
)
# Bucket bounds for Prometheus (OTel's defaults are tuned for milliseconds).
SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
ACCURACY = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
LOSS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def _histogram(name: str, description: str, bounds: Sequence[float], unit: str = "s") -> Histogram:
    """A histogram with the bucket bounds given (in seconds unless `unit` says otherwise)."""
    return _meter.create_histogram(
        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=bounds
    )


_run_duration = _histogram("thunderhelm.run.duration", "Run duration, acceptance to end", SECONDS)
_generations = _meter.create_counter(
    "thunderhelm.generations", unit="{generation}", description="Generations completed"
)
_generation_duration = _histogram(
    "thunderhelm.generation.duration", "Wall time of one generation", SECONDS
)
_training_duration = _histogram(
    "thunderhelm.candidate.training.duration",
    "Training time of one candidate, measured inside its interpreter",
    SECONDS,
)
_candidate_accuracy = _histogram(
    "thunderhelm.candidate.accuracy",
    "Validation accuracy of each trained candidate",
    ACCURACY,
    unit="1",
)
_candidate_loss = _histogram(
    "thunderhelm.candidate.loss", "Validation loss of each trained candidate", LOSS, unit="1"
)
_dead_letters = _meter.create_counter(
    "thunderhelm.dead_letters", unit="{record}", description="Inputs dead-lettered, by stage"
)

_lock = threading.Lock()
_pool_sources: list[PoolStatsSource] = []
# Gauges whose values the worker reports: the last value for each set of attributes.
_lag: dict[AttributeKey, int] = {}
_active_runs: dict[AttributeKey, int] = {}  # one unattributed count, once the worker reports
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


def _reported_observations(
    values: Mapping[AttributeKey, int],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """The callback of a gauge that observes `values`, as last reported."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        with _lock:
            reported = list(values.items())
        return [Observation(value, dict(attributes)) for attributes, value in reported]

    return observe


_meter.create_observable_gauge(
    "thunderhelm.runs.active",
    [_reported_observations(_active_runs)],
    unit="{run}",
    description="Runs in progress that this worker drives",
)
_meter.create_observable_gauge(
    "messaging.kafka.consumer.lag",
    [_reported_observations(_lag)],
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
    _generations.add(1)
    _generation_duration.record(max(0.0, duration_s))


def candidate_trained(
    duration_s: float, status: str, scores: Mapping[str, Any] | None = None
) -> None:
    """One candidate's training ended; `scores` (its metrics) gives accuracy and loss."""
    _training_duration.record(max(0.0, duration_s), {"thunderhelm.status": status})
    scores = scores or {}
    for key, histogram in (("val_accuracy", _candidate_accuracy), ("val_loss", _candidate_loss)):
        value = scores.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            histogram.record(float(value))


def runs_active(count: int) -> None:
    """How many runs in progress this worker drives now (its reconciler's view)."""
    with _lock:
        _active_runs[()] = max(0, count)


def dead_lettered(stage: str, error_class: str, count: int = 1) -> None:
    _dead_letters.add(count, {"dlq.stage": stage, "error.type": error_class})


def consumer_lag(topic: str, partition: int, lag: int) -> None:
    attributes = (
        ("messaging.destination.name", topic),
        ("messaging.destination.partition.id", str(partition)),
    )
    with _lock:
        _lag[attributes] = max(0, lag)


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
    exporters = {e.strip().lower() for e in environ.get("OTEL_METRICS_EXPORTER", "").split(",")}
    if "otlp" not in exporters:
        return None
    explicit = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if explicit:
        return explicit
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318").rstrip("/")
    return f"{base}/v1/metrics"


def configure(
    resource: Resource,
    environ: Mapping[str, str] | None = None,
    *,
    prometheus: bool = True,
    notice: export_outage.OutageNotice | None = None,
) -> bool:
    """Install the SDK meter provider: the Prometheus reader and/or OTLP; False when neither.

    `notice` hears of successful OTLP exports (one log line per collector outage).
    """
    global _provider
    if _provider is not None:
        return True
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    if prometheus:
        from thunderhelm.streams.observability import prometheus as exposition

        readers.append(exposition.reader())
    endpoint = exporter_endpoint(env)
    if endpoint is not None:
        notice = notice or export_outage.install(endpoint)
        exporter = export_outage.metric_exporter(endpoint, notice)
        readers.append(PeriodicExportingMetricReader(exporter))
        log.info("exporting metrics to %s", endpoint)
    if not readers:
        return False
    _provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(_provider)
    return True


def flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def shutdown() -> None:
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None
        from thunderhelm.streams.observability import prometheus as exposition

        exposition.forget()


def run_status(status: str, data: EventData) -> None:
    """Count a run whose folded status just became final (terminal events and rejections)."""
    if status not in saga.TERMINAL:
        return
    run_ended(status, data.result.duration_s if isinstance(data, RunEnded) else None)
