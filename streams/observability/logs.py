"""Log correlation: the current span's trace and span ids on every log line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from opentelemetry import trace

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s span=%(span_id)s]: %(message)s"
_NO_TRACE = "-"


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` of the current span to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            ctx = trace.get_current_span().get_span_context()
            record.trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else _NO_TRACE
            record.span_id = f"{ctx.span_id:016x}" if ctx.is_valid else _NO_TRACE
        return True


def install_log_correlation() -> None:
    """Give every log record `trace_id`/`span_id`, whichever handler formats it.

    A record factory (not a handler filter) survives Faust replacing the root
    handlers at start-up, and stamps the ids in the thread that logs, where
    the span is current. Idempotent.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_thunderhelm_trace", False):
        return
    stamp = TraceContextFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        stamp.filter(record)
        return record

    factory._thunderhelm_trace = True  # type: ignore[attr-defined]  # marker for idempotence
    logging.setLogRecordFactory(factory)


def configure_logging(level: int = logging.INFO) -> None:
    """`logging.basicConfig` with trace and span ids on every line (CLI entry point)."""
    install_log_correlation()
    logging.basicConfig(level=level, format=LOG_FORMAT)


def worker_logging_config() -> dict[str, Any]:
    """A `logging_config` for `faust.Worker`: Faust's own formatters, plus the trace ids."""
    from mode.utils.logging import DEFAULT_FORMATTERS

    install_log_correlation()
    ids = "[trace=%(trace_id)s span=%(span_id)s]"
    formatters: dict[str, dict[str, Any]] = {}
    for name, spec in DEFAULT_FORMATTERS.items():
        shape: dict[str, Any] = dict(cast(Mapping[str, Any], spec))
        shape["format"] = str(shape["format"]).replace("[%(levelname)s]", f"[%(levelname)s] {ids}")
        formatters[name] = shape
    return {"version": 1, "merge": True, "formatters": formatters}
