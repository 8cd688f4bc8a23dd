"""A collector outage is one line in the log, and its end another: real exporters, real sockets."""

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.kafka_helpers import free_port
from thunderhelm.streams.observability import export_outage


class Collector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def notice() -> Iterator[export_outage.OutageNotice]:
    installed = export_outage.install("http://127.0.0.1")
    yield installed
    export_outage.uninstall(installed)


def _span() -> ReadableSpan:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("one") as span:
        pass
    assert isinstance(span, ReadableSpan)
    return span


def test_an_outage_is_said_once_and_its_end_once(
    notice: export_outage.OutageNotice, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    exporter = export_outage.span_exporter(f"http://127.0.0.1:{port}/v1/traces", notice, timeout=1)
    caplog.set_level(logging.INFO)
    for _ in range(3):  # nobody listens: each export retries, warns and gives up
        assert exporter.export([_span()]) is SpanExportResult.FAILURE
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "cannot export telemetry" in said[0].getMessage()
    assert notice.down and notice.dropped > 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        caplog.clear()
        assert exporter.export([_span()]) is SpanExportResult.SUCCESS
        assert exporter.export([_span()]) is SpanExportResult.SUCCESS
    finally:
        server.shutdown()
        server.server_close()
    back = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert len(back) == 1 and "exporter messages left out" in back[0]
    assert not notice.down
