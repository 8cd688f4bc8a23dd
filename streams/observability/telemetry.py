"""All OpenTelemetry at the edge: SDK setup, W3C propagation, span shapes.

Faust consumes records in its own thread, so context never arrives by
itself: every consumed record's `traceparent` is extracted here and every
produced record gets exactly one injected here. A run keeps its trace context
in its state, so spans written minutes later (or by another worker after a
restart) join the same trace. Span names and attributes follow the OTel
messaging semantic conventions and are defined only in this module, so the
rest of the code never spells a span name (log correlation: logs.py).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import export_outage

TRACER_NAME = "thunderhelm"
_TRACE_HEADERS = ("traceparent", "tracestate")
log = logging.getLogger(__name__)

# Span names (OTel messaging conventions: "{operation} {destination}").
PROCESS_OPERATION = "process"
SEND_OPERATION = "send"
DECISION_SPAN = "saga decide"
GENERATION_SPAN = "generation {generation}"
CANDIDATE_SPAN = "train candidate {generation}.{index}"
RUNG_SPAN = "rung {epoch}"
DEAD_LETTER_SPAN = "thunderhelm.event.dead-lettered"


def process_span_name(topic: str) -> str:
    return f"{PROCESS_OPERATION} {topic}"


def send_span_name(topic: str) -> str:
    return f"{SEND_OPERATION} {topic}"


class _BytesHeaderGetter(Getter[Mapping[str, Any]]):
    """Reads Kafka headers (str -> bytes) for the W3C propagator."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            return [value.decode("utf-8", "replace")]
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _BytesHeaderGetter()


def configure(settings: Settings) -> None:
    """Install the SDK tracer provider exporting over OTLP/HTTP (entry points only)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": settings.service_name,
            # Tells apart the worker processes that wrote one run's trace (restarts).
            "service.instance.id": f"{socket.gethostname()}/{os.getpid()}",
        }
    )
    provider = TracerProvider(resource=resource)
    # While the collector is away the exporters complain once, not per retry.
    notice = export_outage.install(settings.otlp_endpoint)
    if settings.tracing:
        endpoint = settings.otlp_endpoint
        if not endpoint.endswith("/v1/traces"):
            endpoint = f"{endpoint}/v1/traces"
        # The processor's queue is bounded (2048 spans): an outage costs spans, not memory.
        exporter = export_outage.span_exporter(endpoint, notice)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    from thunderhelm.streams.observability import metrics

    metrics.configure(resource, prometheus=settings.metrics, notice=notice)


def flush(timeout_ms: int = 5000) -> None:
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_ms)
    from thunderhelm.streams.observability import metrics

    metrics.flush(timeout_ms)


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if stop is not None:
        stop()
    from thunderhelm.streams.observability import metrics

    metrics.shutdown()


def tracer() -> trace.Tracer:
    # Every span asks for the tracer: look it up once per provider (the lookup
    # builds an instrumentation scope each time, a measurable share of an agent's CPU).
    return _tracer_of(trace.get_tracer_provider())


@functools.lru_cache(maxsize=4)
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    return provider.get_tracer(TRACER_NAME)


def extract(headers: Mapping[str, Any]) -> Context:
    return propagate.extract(headers, getter=_GETTER)


def context_from_traceparent(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    ctx = extract({"traceparent": traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def inject_headers(context: Context | None = None) -> dict[str, bytes]:
    """W3C headers for the given (or current) context, one of each at most."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return {k: v.encode("ascii") for k, v in carrier.items() if k in _TRACE_HEADERS}


def traceparent_of(span: Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def trace_id_of(traceparent: str | None) -> str | None:
    if not traceparent or traceparent.count("-") != 3:
        return None
    return traceparent.split("-")[1]


@contextmanager
def consume_span(
    topic: str, partition: int, offset: int, key: bytes | None, headers: Mapping[str, Any]
) -> Iterator[Span]:
    """The CONSUMER span of one record, parented on the producer's context."""
    with tracer().start_as_current_span(
        process_span_name(topic),
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=_consume_attributes(topic, partition, offset, key),
    ) as span:
        yield span


@contextmanager
def produce_span(topic: str, key: str | None, context: Context | None = None) -> Iterator[Span]:
    """The PRODUCER span of one record; its context goes into the record's headers."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": SEND_OPERATION,
        "messaging.operation.name": SEND_OPERATION,
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    with tracer().start_as_current_span(
        send_span_name(topic), context=context, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


@contextmanager
def internal_span(
    name: str, context: Context | None = None, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span]:
    with tracer().start_as_current_span(
        name, context=context, kind=SpanKind.INTERNAL, attributes=dict(attributes or {})
    ) as span:
        yield span


def start_generation_span(generation: int, context: Context | None, candidates: int) -> Span:
    """A generation spread over workers: started when its tasks go out, ended by the caller
    once its last outcome is in; the tasks carry it, so their trainings nest under it."""
    return tracer().start_span(
        GENERATION_SPAN.format(generation=generation),
        context=context,
        kind=SpanKind.INTERNAL,
        attributes={
            "thunderhelm.generation": generation,
            "thunderhelm.candidates": candidates,
            "thunderhelm.fanout": True,
        },
    )


def record_span(
    name: str,
    *,
    context: Context | None,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    error: str | None = None,
) -> Context:
    """A span whose timing was measured elsewhere (inside a pool interpreter); its context."""
    span = tracer().start_span(
        name,
        context=context,
        kind=SpanKind.INTERNAL,
        attributes=dict(attributes),
        start_time=start_ns,
    )
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
        span.set_attribute("error.type", error.split(":")[0][:100])
    span.end(end_time=end_ns)
    return trace.set_span_in_context(span)


def mark_failed(span: Span, error_class: str, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, f"{error_class}: {message}"[:500]))
    span.set_attribute("error.type", error_class)


@contextmanager
def decision_span(run_id: str, status: str, run_context: Context | None) -> Iterator[Span]:
    """The saga's decision for a run, in the run's trace.

    Inside a consumed record it nests under that record's process span; when
    the reconciler or a finished step drives a run (after a restart, on a
    budget) no live span is current, so it hangs off the run's own context.
    """
    # A background step inherits the span of the record that launched it, long
    # ended by now; its decisions belong to the run, not to that old record.
    current = trace.get_current_span()
    context = None if current.is_recording() else run_context
    with internal_span(
        DECISION_SPAN,
        context,
        {"thunderhelm.run_id": run_id, "thunderhelm.run.status": status},
    ) as span:
        yield span


@contextmanager
def dead_letter_span(
    stage: str, error_class: str, message: str, input_headers: Mapping[str, Any]
) -> Iterator[Span]:
    """The error span of a dead-lettered input, linked to the input's own context.

    It is opened under the record's process span (so it sits in the input's
    trace) and also links the producer's span context explicitly, which keeps
    the relation visible when a viewer shows only links.
    """
    producer = trace.get_current_span(extract(input_headers)).get_span_context()
    links = (
        [Link(producer, {"thunderhelm.link": "dead-lettered input"})] if producer.is_valid else []
    )
    with tracer().start_as_current_span(
        DEAD_LETTER_SPAN,
        kind=SpanKind.INTERNAL,
        attributes={"dlq.stage": stage, "error.type": error_class},
        links=links,
    ) as span:
        mark_failed(span, error_class, message)
        yield span


# --- the intake's spans (started and ended explicitly: it handles batches) -------


def record_context(headers: Sequence[tuple[str, bytes]]) -> Context | None:
    """The producer's context a consumed record carries; None when it has no valid one."""
    if not any(name == "traceparent" for name, _ in headers):
        return None  # most hostile input: skip the propagator
    context = extract(dict(headers))
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def headers_of(span: Span) -> dict[str, bytes]:
    """The `traceparent` that names `span` (the intake's spans carry no tracestate)."""
    traceparent = traceparent_of(span)
    return {} if traceparent is None else {"traceparent": traceparent.encode("ascii")}


def _consume_attributes(
    topic: str, partition: int, offset: int, key: bytes | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": PROCESS_OPERATION,
        "messaging.operation.name": PROCESS_OPERATION,
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")[:200]
    return attributes


class ConsumedRecord(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...


def forward_span(record: ConsumedRecord, context: Context | None) -> dict[str, bytes]:
    """The `process` span of an admitted input; returns the headers that name it."""
    span = tracer().start_span(
        process_span_name(record.topic),
        context=context,
        kind=SpanKind.CONSUMER,
        attributes=_consume_attributes(record.topic, record.partition, record.offset, record.key),
    )
    span.end()
    return headers_of(span)


def dead_letter_spans(
    record: ConsumedRecord, context: Context, error_class: str, stage: str, message: str
) -> dict[str, bytes]:
    """A traced input's `process` span and, under it, its dead-letter span (both ERROR).

    Returns the headers that name the dead-letter span.
    """
    process = tracer().start_span(
        process_span_name(record.topic),
        context=context,
        kind=SpanKind.CONSUMER,
        attributes=_consume_attributes(record.topic, record.partition, record.offset, record.key),
    )
    mark_failed(process, error_class, message)
    process.set_attribute("thunderhelm.dead_lettered", True)
    producer = trace.get_current_span(context).get_span_context()
    dead = tracer().start_span(
        DEAD_LETTER_SPAN,
        context=trace.set_span_in_context(process),
        kind=SpanKind.INTERNAL,
        attributes={"dlq.stage": stage, "error.type": error_class},
        links=[Link(producer, {"thunderhelm.link": "dead-lettered input"})],
    )
    mark_failed(dead, error_class, message)
    dead.end()
    process.end()
    return headers_of(dead)


def start_dead_letter_batch_span(topic: str) -> Span:
    """The dead-letter span shared by a batch's inputs that carry no trace context."""
    return tracer().start_span(
        DEAD_LETTER_SPAN,
        kind=SpanKind.INTERNAL,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
    )
