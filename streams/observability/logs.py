"""Log correlation: the current span's trace and span ids on every log line, as text or JSON.

`THUNDERHELM_LOG_FORMAT=json` makes every line one JSON object (python-json-logger)
with `time`, `level`, `logger`, `process`, `message`, and `trace_id` and `span_id`
when a span is current, so a log store can join lines to their Jaeger trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s span=%(span_id)s]: %(message)s"
_NO_TRACE = "-"
# The JSON fields, in order, and their names on the line.
JSON_FIELDS = ("asctime", "levelname", "name", "process", "message", "trace_id", "span_id")
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class JsonLineFormatter(JsonFormatter):
    """python-json-logger's formatter; ids are left out where no span was current."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", " ".join(f"%({field})s" for field in JSON_FIELDS))
        kwargs.setdefault("rename_fields", JSON_NAMES)
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key in ("trace_id", "span_id"):
            if log_data.get(key) == _NO_TRACE:
                del log_data[key]
        return log_data


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


def configure_logging(level: int = logging.INFO, log_format: str = "text") -> None:
    """`logging.basicConfig` with trace and span ids on every line (CLI entry point)."""
    install_log_correlation()
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLineFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=LOG_FORMAT)


def worker_logging_config(log_format: str | None = None) -> dict[str, Any]:
    """A `logging_config` for `faust.Worker`: Faust's own formatters plus the trace ids.

    With `log_format="json"` (default: `THUNDERHELM_LOG_FORMAT`) every formatter
    Faust's handlers use writes JSON lines instead.
    """
    from mode.utils.logging import DEFAULT_FORMATTERS

    install_log_correlation()
    if log_format is None:
        from thunderhelm.streams.config.settings import Settings

        log_format = Settings.from_env().log_format
    formatters: dict[str, dict[str, Any]] = {}
    if log_format == "json":
        target = f"{JsonLineFormatter.__module__}.{JsonLineFormatter.__qualname__}"
        formatters = {name: {"()": target} for name in DEFAULT_FORMATTERS}
        return {"version": 1, "merge": True, "formatters": formatters}
    ids = "[trace=%(trace_id)s span=%(span_id)s]"
    for name, spec in DEFAULT_FORMATTERS.items():
        shape: dict[str, Any] = dict(cast(Mapping[str, Any], spec))
        shape["format"] = str(shape["format"]).replace("[%(levelname)s]", f"[%(levelname)s] {ids}")
        formatters[name] = shape
    return {"version": 1, "merge": True, "formatters": formatters}
