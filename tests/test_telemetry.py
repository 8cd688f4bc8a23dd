"""The telemetry edge without a broker: propagation, span shapes, log ids, settings.

Spans go to an in-memory exporter of a local tracer provider (the global one
may already be set by another test module, and can be set only once).
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from thunderhelm.streams.execution import outcomes, steps
from thunderhelm.streams.observability import logs, metrics, telemetry

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


def by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def test_consume_extracts_bytes_headers_and_send_injects_exactly_one(
    spans: InMemorySpanExporter,
) -> None:
    headers = {"traceparent": TRACEPARENT.encode(), "tracestate": b"vendor=1"}
    with (
        telemetry.consume_span("t.in", 1, 42, b"run-1", headers),
        telemetry.produce_span("t.out", "run-1"),
    ):
        out = telemetry.inject_headers()
    consumed = by_name(spans, "process t.in")
    sent = by_name(spans, "send t.out")
    assert consumed.kind == SpanKind.CONSUMER and sent.kind == SpanKind.PRODUCER
    assert f"{consumed.context.trace_id:032x}" == PARENT_TRACE
    assert consumed.parent is not None and f"{consumed.parent.span_id:016x}" == PARENT_SPAN
    assert sent.parent is not None and sent.parent.span_id == consumed.context.span_id
    assert set(out) == {"traceparent", "tracestate"} and out["tracestate"] == b"vendor=1"
    assert out["traceparent"].decode() == f"00-{PARENT_TRACE}-{sent.context.span_id:016x}-01"
    attrs = consumed.attributes or {}
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == "t.in"
    assert attrs["messaging.destination.partition.id"] == "1"
    assert attrs["messaging.kafka.offset"] == 42
    assert (sent.attributes or {})["messaging.operation.type"] == "send"


def test_a_decision_joins_the_live_record_or_else_the_run(spans: InMemorySpanExporter) -> None:
    run_context = telemetry.context_from_traceparent(TRACEPARENT)
    with (
        telemetry.consume_span("t.events", 0, 1, None, {}) as record,
        telemetry.decision_span("r", "running", run_context),
    ):
        pass
    with telemetry.decision_span("r", "running", run_context):  # nothing current
        pass
    with telemetry.consume_span("t.events", 0, 2, None, {}) as old:
        pass
    with (
        trace.use_span(old),  # a background step still holding an ended span
        telemetry.decision_span("r", "running", run_context),
    ):
        pass
    decisions = [s for s in spans.get_finished_spans() if s.name == telemetry.DECISION_SPAN]
    parents = [f"{d.parent.span_id:016x}" if d.parent else None for d in decisions]
    assert parents == [
        f"{record.get_span_context().span_id:016x}",
        PARENT_SPAN,
        PARENT_SPAN,
    ]


def test_a_dead_letter_is_an_error_span_linked_to_its_input(spans: InMemorySpanExporter) -> None:
    headers = {"traceparent": TRACEPARENT.encode()}
    with (
        telemetry.consume_span("t.in", 0, 7, None, headers),
        telemetry.dead_letter_span("decode", "DecodeError", "not JSON", headers),
    ):
        pass
    dlq = by_name(spans, telemetry.DEAD_LETTER_SPAN)
    assert dlq.status.status_code == StatusCode.ERROR
    assert (dlq.attributes or {})["error.type"] == "DecodeError"
    assert (dlq.attributes or {})["dlq.stage"] == "decode"
    assert [f"{link.context.span_id:016x}" for link in dlq.links] == [PARENT_SPAN]
    assert f"{dlq.context.trace_id:032x}" == PARENT_TRACE


def test_candidate_spans_take_their_times_from_the_interpreter(
    spans: InMemorySpanExporter,
) -> None:
    telemetry.record_span(
        "train candidate 0.1",
        context=telemetry.context_from_traceparent(TRACEPARENT),
        start_ns=1_000_000_000,
        end_ns=3_500_000_000,
        attributes={"thunderhelm.interpreter": "3"},
        error="timeout: no result by the deadline",
    )
    span = by_name(spans, "train candidate 0.1")
    assert (span.start_time, span.end_time) == (1_000_000_000, 3_500_000_000)
    assert (span.attributes or {})["error.type"] == "timeout"


def test_each_rung_a_training_reached_is_a_span_under_it_with_its_decision(
    spans: InMemorySpanExporter,
) -> None:
    curve = [
        {"epoch": 1, "val_accuracy": 0.6, "val_loss": 0.9, "at": 2.0},
        {"epoch": 2, "val_accuracy": 0.62, "val_loss": 0.8, "at": 3.0},
    ]
    network = {
        "units": [],
        "rungs": [{"epoch": 1, "min_val_accuracy": 0.5}, {"epoch": 2, "min_val_accuracy": 0.7}],
    }
    metrics = {
        "status": "ok",
        "started_at": 1.0,
        "ended_at": 3.0,
        "epochs_run": 2,
        "curve": curve,
        "pruned_at": 2,
    }
    context = telemetry.context_from_traceparent(TRACEPARENT)
    outcomes.candidate_span(context, 1, 4, network, metrics)
    training = by_name(spans, "train candidate 1.4")
    assert (training.attributes or {})["thunderhelm.pruned_at"] == 2
    first, second = by_name(spans, "rung 1"), by_name(spans, "rung 2")
    for rung in (first, second):
        assert rung.parent is not None and rung.parent.span_id == training.context.span_id
    assert (first.attributes or {})["thunderhelm.rung.decision"] == "promoted"
    assert (second.attributes or {})["thunderhelm.rung.decision"] == "stopped"
    assert (second.attributes or {})["thunderhelm.rung.figure"] == 0.62
    assert second.start_time == 3_000_000_000


def test_log_records_carry_trace_and_span_ids(spans: InMemorySpanExporter) -> None:
    logs.install_log_correlation()
    logs.install_log_correlation()  # idempotent
    logger = logging.getLogger("test.telemetry")
    outside = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "x", (), None)
    assert (outside.trace_id, outside.span_id) == ("-", "-")
    with telemetry.consume_span("t.in", 0, 1, None, {"traceparent": TRACEPARENT.encode()}) as s:
        inside = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "x", (), None)
    assert inside.trace_id == PARENT_TRACE
    assert inside.span_id == f"{s.get_span_context().span_id:016x}"
    formatted = logging.Formatter(logs.LOG_FORMAT).format(inside)
    assert f"trace={PARENT_TRACE}" in formatted


def test_worker_logging_config_keeps_faust_formatters_and_adds_the_ids() -> None:
    config = logs.worker_logging_config()
    assert config["merge"] is True
    for spec in config["formatters"].values():
        assert "%(trace_id)s" in spec["format"] and "%(message)s" in spec["format"]


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, None),
        ({"OTEL_METRICS_EXPORTER": "none"}, None),
        ({"OTEL_METRICS_EXPORTER": "otlp"}, "http://127.0.0.1:4318/v1/metrics"),
        ({"OTEL_METRICS_EXPORTER": "prometheus, otlp"}, "http://127.0.0.1:4318/v1/metrics"),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, None),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"},
            "http://c:4318/v1/metrics",
        ),
        (
            {
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9/x",
            },
            "http://m:9/x",
        ),
        ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_otlp_metrics_are_off_unless_asked_for(env: dict[str, str], endpoint: str | None) -> None:
    assert metrics.exporter_endpoint(env) == endpoint


def test_training_summary_of_a_generation() -> None:
    candidates = [
        {
            "status": "ok",
            "started_at": 10.0,
            "ended_at": 12.0,
            "epochs_run": 3,
            "params": 100,
            "interpreter": 2,
        },
        {
            "status": "ok",
            "started_at": 10.5,
            "ended_at": 11.5,
            "epochs_run": 2,
            "params": 300,
            "interpreter": 3,
        },
        {"status": "timeout", "started_at": None, "ended_at": 13.0, "epochs_run": 0},
    ]
    summary = steps.training_summary(candidates, wall_s=3.0)
    assert summary == {
        "candidates_trained": 3,
        "failed": 1,
        "epochs_total": 5,
        "train_time_total_s": 3.0,
        "train_time_mean_s": 1.5,
        "train_time_max_s": 2.0,
        "params_mean": 200.0,
        "interpreters": ["2", "3"],
        "parallelism": 1.0,
    }
