"""Fixtures shared by several test modules."""

import signal
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from thunderhelm.streams.observability import telemetry


def pytest_configure(config: pytest.Config) -> None:
    """Children of the suite get SIGINT even when the suite runs as a background job.

    A shell without job control starts a background job (`nohup pytest &`, a
    CI runner) with SIGINT ignored, and an ignored signal stays ignored across
    exec: the Ctrl-C tests' children would never see theirs. A handler, unlike
    "ignored", is reset to the default on exec, so with one here every child
    starts as it would from a terminal.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Every span the telemetry module starts, kept in memory for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "tracer", lambda: provider.get_tracer("test"))
    yield exporter
    provider.shutdown()
