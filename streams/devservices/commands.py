"""``thunderhelm services start|stop|status``: real Kafka and Jaeger without Docker.

Dev and CI machines have no Docker engine, yet the integration tests and a
local worker need a real Kafka broker and a real Jaeger. This module provides
them as detached processes on 127.0.0.1 (Kafka from Maven Central jars on the
local Java, Jaeger built with Go), idempotently: ``start`` returns only when
both answer, a second ``start`` does nothing, ``stop`` stops only what it
started. Users with Docker can use ``docker-compose.yml`` instead.

Files: jars and the Jaeger binary are cached under ``THUNDERHELM_CACHE_DIR``
(default ``~/.cache/thunderhelm``); pid files, logs, generated configs and the
Kafka data live under ``THUNDERHELM_STATE_DIR`` (default ``<repo>/var/services``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from thunderhelm.streams.devservices import jaeger_service, kafka_service
from thunderhelm.streams.devservices.local_service import (
    ServicesSettings,
    ServicesStatus,
    ServiceState,
    state_lock,
)
from thunderhelm.streams.devservices.processes import ServicesError

__all__ = [
    "ServiceState",
    "ServicesError",
    "ServicesSettings",
    "ServicesStatus",
    "main",
    "start",
    "status",
    "stop",
]

EXIT_NOT_RUNNING = 3


def _selected(kafka: bool, jaeger: bool) -> tuple[bool, bool]:
    if not kafka and not jaeger:
        raise ValueError("select at least one service")
    return kafka, jaeger


def start(
    settings: ServicesSettings | None = None,
    *,
    kafka: bool = True,
    jaeger: bool = True,
    fresh: bool = False,
) -> ServicesStatus:
    """Start the selected services unless running; return when they answer.

    ``fresh`` stops Kafka first and wipes its data (Jaeger keeps traces only in
    memory, so a fresh start restarts it too). Raises :class:`ServicesError`
    with an actionable message when a tool is missing, a port is held by a
    foreign process, or a service fails to come up.
    """
    settings = settings or ServicesSettings.from_env()
    kafka, jaeger = _selected(kafka, jaeger)
    states: list[ServiceState] = []
    with state_lock(settings):
        if kafka:
            if fresh:
                kafka_service.stop(settings)
                kafka_service.wipe_data(settings)
            states.append(kafka_service.start(settings))
        if jaeger:
            if fresh:
                jaeger_service.stop(settings)
            states.append(jaeger_service.start(settings))
    return ServicesStatus(tuple(states))


def stop(
    settings: ServicesSettings | None = None, *, kafka: bool = True, jaeger: bool = True
) -> ServicesStatus:
    """Stop the selected services if we started them; idempotent."""
    settings = settings or ServicesSettings.from_env()
    kafka, jaeger = _selected(kafka, jaeger)
    states: list[ServiceState] = []
    with state_lock(settings):
        if jaeger:
            states.append(jaeger_service.stop(settings))
        if kafka:
            states.append(kafka_service.stop(settings))
    states.sort(key=lambda s: s.name != "kafka")
    return ServicesStatus(tuple(states))


def status(
    settings: ServicesSettings | None = None, *, kafka: bool = True, jaeger: bool = True
) -> ServicesStatus:
    """Report each selected service: running or not, pid, address, log file."""
    settings = settings or ServicesSettings.from_env()
    kafka, jaeger = _selected(kafka, jaeger)
    states: list[ServiceState] = []
    if kafka:
        states.append(kafka_service.status(settings))
    if jaeger:
        states.append(jaeger_service.status(settings))
    return ServicesStatus(tuple(states))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thunderhelm services",
        description="Run a local Kafka broker and Jaeger on 127.0.0.1 without Docker.",
        epilog="Environment: THUNDERHELM_CACHE_DIR, THUNDERHELM_STATE_DIR, "
        "THUNDERHELM_KAFKA_PORT, THUNDERHELM_KAFKA_CONTROLLER_PORT, "
        "THUNDERHELM_JAEGER_{OTLP_GRPC,OTLP_HTTP,QUERY,QUERY_GRPC,METRICS}_PORT, "
        "THUNDERHELM_KAFKA_HEAP, THUNDERHELM_KAFKA_AUTO_CREATE_TOPICS, "
        "THUNDERHELM_SERVICES_START_TIMEOUT.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("start", "start the services (idempotent) and wait until they answer"),
        ("stop", "stop the services this tool started (idempotent)"),
        ("status", f"show each service; exit {EXIT_NOT_RUNNING} if one is not running"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        only = cmd.add_mutually_exclusive_group()
        only.add_argument("--kafka-only", action="store_true", help="only Kafka")
        only.add_argument("--jaeger-only", action="store_true", help="only Jaeger")
        cmd.add_argument("--json", action="store_true", help="print the status as JSON")
        if name == "start":
            cmd.add_argument(
                "--fresh", action="store_true", help="wipe Kafka data and restart Jaeger first"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``thunderhelm services``; returns the process exit code."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    kafka, jaeger = not args.jaeger_only, not args.kafka_only
    try:
        settings = ServicesSettings.from_env()
        if args.command == "start":
            result = start(settings, kafka=kafka, jaeger=jaeger, fresh=args.fresh)
        elif args.command == "stop":
            result = stop(settings, kafka=kafka, jaeger=jaeger)
        else:
            result = status(settings, kafka=kafka, jaeger=jaeger)
    except ServicesError as exc:
        print(f"thunderhelm services {args.command}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.render())
    if args.command == "status" and not result.all_running:
        return EXIT_NOT_RUNNING
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
