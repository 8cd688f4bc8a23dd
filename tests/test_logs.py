"""JSON log lines: one object per line, with the current span's trace and span ids."""

from __future__ import annotations

import io
import json
import logging
import logging.config

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from thunderhelm.streams.observability import logs, telemetry

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_carry_the_span_ids_inside_a_span(spans: InMemorySpanExporter) -> None:
    logs.install_log_correlation()
    logger, out = capture(logs.JsonLineFormatter())
    logger.info("outside %s", "any span")
    with telemetry.consume_span("t.in", 0, 1, None, {"traceparent": TRACEPARENT.encode()}) as s:
        logger.warning("inside")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # a traceback stays on its line
    outside, inside, failed = (json.loads(line) for line in lines)
    assert outside["message"] == "outside any span" and outside["level"] == "INFO"
    assert "trace_id" not in outside and "span_id" not in outside
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert inside["span_id"] == f"{s.get_span_context().span_id:016x}"
    assert {"time", "logger", "process"} <= inside.keys()
    assert "ValueError: boom" in failed["exc_info"]


def test_the_worker_config_swaps_every_faust_formatter_for_json() -> None:
    config = logs.worker_logging_config("json")
    assert config["merge"] is True
    for spec in config["formatters"].values():
        assert spec == {"()": "thunderhelm.streams.observability.logs.JsonLineFormatter"}
    # The config loads: dictConfig builds the formatter from its dotted name.
    out = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": config["formatters"],
            "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "default"}},
            "loggers": {"test.logs.dict": {"handlers": ["h"], "propagate": False}},
        }
    )
    logger = logging.getLogger("test.logs.dict")
    handler = logger.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logger.warning("hello")
    assert json.loads(out.getvalue())["message"] == "hello"


def test_text_stays_the_default() -> None:
    config = logs.worker_logging_config("text")
    assert all("%(trace_id)s" in spec["format"] for spec in config["formatters"].values())
