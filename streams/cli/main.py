"""`thunderhelm` command line: services, worker, submit, watch, cancel, run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from thunderhelm.streams.worker.settings import Settings


def _request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.file:
        loaded = json.loads(Path(args.file).read_text())
        request: dict[str, Any] = loaded.get("data", loaded) if "specversion" in loaded else loaded
        if args.run_id:
            request["run_id"] = args.run_id
        return request
    import uuid

    dataset: dict[str, Any] = {"name": args.dataset, "seed": args.seed}
    if args.dataset == "spirals":
        dataset |= {"samples": args.samples, "classes": args.classes}
    return {
        "run_id": args.run_id or f"run-{uuid.uuid4().hex[:10]}",
        "dataset": dataset,
        "ga": {
            "population": args.population,
            "generations": args.generations,
            "tournament_size": min(3, args.population),
            "elite": 1,
            "seed": args.seed,
        },
        "training": {"epochs": args.epochs, "batch_size": args.batch_size},
        "budget": {"timeout_s": args.timeout},
    }


def _add_request_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", "--request", dest="file", help="request JSON (data or a CloudEvent)")
    p.add_argument("--run-id")
    p.add_argument("--dataset", default="spirals", choices=["spirals", "digits", "shakespeare"])
    p.add_argument("--samples", type=int, default=1200)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--population", type=int, default=6)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=600.0)


def cmd_worker(settings: Settings) -> int:
    import faulthandler

    import faust

    # A crash in native code (the kernel, an interpreter) leaves every
    # thread's stack in the worker's log instead of nothing.
    faulthandler.enable(all_threads=True)

    from thunderhelm.streams.observability import telemetry
    from thunderhelm.streams.worker.app import create_app
    from thunderhelm.streams.worker.topics import ensure_topics

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    created = loop.run_until_complete(ensure_topics(settings, timeout_s=60.0))
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)
    telemetry.configure(settings)
    app, service = create_app(settings)
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel="INFO",
        redirect_stdouts=False,
        logging_config=telemetry.worker_logging_config(),
    )
    try:
        worker.execute_from_commandline()
    finally:
        service.stop()
        telemetry.shutdown()
    return 0


async def _watch(settings: Settings, run_id: str, timeout: float | None, as_json: bool) -> int:
    from thunderhelm.schemas import events as ev
    from thunderhelm.streams.cli import client
    from thunderhelm.streams.observability import telemetry

    trace_id = None
    result: dict[str, Any] | None = None
    async for seen in client.follow(settings, run_id, timeout_s=timeout):
        data = seen.event.data if isinstance(seen.event.data, dict) else {}
        if seen.event.type == ev.RUN_ACCEPTED and data.get("traceparent"):
            trace_id = telemetry.trace_id_of(data["traceparent"])
        if seen.topic == settings.run_results:
            result = data
        elif not as_json:
            print(f"[{run_id}] {client.describe(seen)}", flush=True)
        if seen.event.type == ev.RUN_REJECTED:
            if as_json:
                print(json.dumps({"run_id": run_id, "status": "rejected", **data}))
            return 2
    assert result is not None
    if as_json:
        print(json.dumps(result))
    else:
        print(client.summary(result))
        if trace_id:
            print(f"trace id: {trace_id}")
            print(f"trace (Jaeger UI):  {client.trace_url(settings, trace_id)}")
            print(f"trace (Jaeger API): {client.trace_api_url(settings, trace_id)}")
    return 0 if result.get("status") == "succeeded" else 1


def _bench(rest: list[str]) -> int:
    """The benchmarks live in the checkout (`bench/`), not in the installed package."""
    import subprocess

    from thunderhelm.streams.worker.settings import REPO_ROOT

    if not (REPO_ROOT / "bench" / "__main__.py").is_file():
        print("thunderhelm bench: needs a source checkout (bench/ is not installed)")
        return 2
    return subprocess.call([sys.executable, "-m", "bench", *rest], cwd=REPO_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thunderhelm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("services", help="start/stop/status of local Kafka and Jaeger")
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser(
        "worker",
        help="run the Faust worker (supervised: restarted when its process dies)",
        description=(
            "Run the Faust worker. By default this process is a small supervisor "
            "that runs the worker as a child process, logs 'worker process PID "
            "started' and restarts it with exponential backoff when it dies (a "
            "signal or a non-zero exit); SIGTERM/SIGINT stop both."
        ),
    )
    p.add_argument(
        "--no-supervise",
        action="store_true",
        help="run the worker in this process, with no supervisor to restart it",
    )
    p = sub.add_parser("submit", help="produce a run request; prints the run id")
    _add_request_flags(p)
    p.add_argument("--wait", action="store_true", help="then watch it to the end")
    p = sub.add_parser("watch", help="follow a run's events and print its result")
    p.add_argument("run_id")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print only the result JSON")
    p = sub.add_parser("cancel", help="request cancellation of a run")
    p.add_argument("run_id")
    p.add_argument("--reason", default="cancelled by user")
    p = sub.add_parser("runs", help="list runs, folded from the event log")
    p.add_argument(
        "--status",
        choices=[
            "accepted",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "rejected",
            "cancel-pending",
        ],
    )
    sub.add_parser("replay", help="rebuild every run from the event log; diff with the table")
    p = sub.add_parser("trace", help="show a run's trace from Jaeger as a tree")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("dlq", help="list, show and re-drive dead letters")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("dashboard", help="serve the web dashboard (runs, traces, dead letters)")
    p.add_argument("--host", help="address to listen on (THUNDERHELM_DASHBOARD_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (THUNDERHELM_DASHBOARD_PORT, 6070)")
    p = sub.add_parser("bench", help="run benchmarks (pool, kernel, quality, faults, ...)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("run", help="run a NAS job on the local pool, without Kafka")
    _add_request_flags(p)
    p.add_argument("--pool-size", type=int, default=0)
    p.add_argument("--json", action="store_true", help="last line: the result JSON")
    from thunderhelm.streams.cli import model_commands

    model_commands.add_parsers(sub)

    args = parser.parse_args(argv)
    if args.command == "worker" and not args.no_supervise:
        # Before any other import: the supervisor stays a small process.
        from thunderhelm.streams.worker import supervisor

        return supervisor.main()
    from thunderhelm.streams.observability import telemetry

    telemetry.configure_logging(logging.INFO)
    # The client library's own notes are noise in a terminal; the worker keeps them.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    match args.command:
        case "services":
            from thunderhelm.streams.devservices import commands

            return commands.main(args.rest)
        case "worker":
            return cmd_worker(settings)
        case "submit":
            from thunderhelm.streams.cli import client
            from thunderhelm.streams.observability import telemetry

            telemetry.configure(Settings.from_env({**_env(), "OTEL_SERVICE_NAME": _cli_name()}))
            request = _request_from_args(args)
            trace_id = asyncio.run(client.submit(settings, request))
            telemetry.flush()
            print(request["run_id"], flush=True)
            if not args.wait:
                return 0
            print(f"trace id: {trace_id}", file=sys.stderr)
            return asyncio.run(_watch(settings, request["run_id"], args.timeout, False))
        case "watch":
            return asyncio.run(_watch(settings, args.run_id, args.timeout, args.json))
        case "cancel":
            from thunderhelm.streams.cli import client
            from thunderhelm.streams.observability import telemetry

            telemetry.configure(Settings.from_env({**_env(), "OTEL_SERVICE_NAME": _cli_name()}))
            asyncio.run(client.cancel(settings, args.run_id, args.reason))
            telemetry.flush()
            print(f"cancel requested for {args.run_id}")
            return 0
        case "runs":
            from thunderhelm.streams.cli import replay

            replayed, _table = asyncio.run(replay.replay(settings))
            print(replay.render_runs(replayed, args.status))
            return 0
        case "replay":
            from thunderhelm.streams.cli import replay

            replayed, table = asyncio.run(replay.replay(settings))
            report, code = replay.render_replay(replayed, table)
            print(report)
            return code
        case "trace":
            from thunderhelm.streams.cli import trace_view

            return trace_view.main(args.rest)
        case "dlq":
            from thunderhelm.streams.cli import dead_letters

            return dead_letters.main(args.rest)
        case "dashboard":
            from thunderhelm.streams.dashboard import main as dashboard

            return dashboard.main(settings, args.host, args.port)
        case "bench":
            return _bench(args.rest)
        case "run":
            from thunderhelm.streams.execution.local_run import run_local

            return run_local(settings, _request_from_args(args), args.pool_size, args.json)
        case "predict" | "export":
            return model_commands.main(args)
    return 2


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _cli_name() -> str:
    import os

    return os.environ.get("THUNDERHELM_CLI_SERVICE_NAME", "thunderhelm-cli")


if __name__ == "__main__":
    raise SystemExit(main())
