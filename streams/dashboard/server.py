"""The dashboard's web server: static pages, a JSON API and server-sent events.

Reads come from the read model (the event log, folded) and Jaeger's API;
writes are the CLI's own: a cancel is `client.cancel`, a redrive is
`dead_letters.redrive`. A write must come as JSON from the dashboard's own
origin, so another site open in the same browser cannot post one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from thunderhelm.streams.clients import client
from thunderhelm.streams.clients import dead_letters as dlq
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.dashboard import trace_data
from thunderhelm.streams.dashboard.log_reader import LogReader
from thunderhelm.streams.dashboard.read_model import ReadModel
from thunderhelm.streams.dashboard.settings import DashboardSettings

log = logging.getLogger(__name__)
STATIC = resources.files("thunderhelm.streams.dashboard") / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
HEARTBEAT_S = 15.0
MAX_REDRIVE = 500
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
DASH: web.AppKey[DashboardSettings] = web.AppKey("dashboard", DashboardSettings)
MODEL: web.AppKey[ReadModel] = web.AppKey("model", ReadModel)
HUB: web.AppKey[Hub] = web.AppKey("hub")
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)


class Hub:
    """Fan-out of changed run ids to every open event stream."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[str]] = set()

    def publish(self, run_id: str) -> None:
        for queue in self.queues:
            queue.put_nowait(run_id)

    def close(self) -> None:
        """Ends every open stream (an empty run id), so the server can stop at once."""
        self.publish("")


# Each handler declares its route (aiohttp's route table).
routes = web.RouteTableDef()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, allow_nan=False))


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _static_file("index.html")


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.Response:
    return _static_file(request.match_info["name"])


def _static_file(name: str) -> web.Response:
    # Only the files that ship in the package, by exact name: never a path.
    names = {p.name for p in STATIC.iterdir()}
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if name not in names or suffix not in STATIC_TYPES:
        raise web.HTTPNotFound()
    body = (STATIC / name).read_bytes()
    headers = {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
    return web.Response(body=body, content_type=STATIC_TYPES[suffix], headers=headers)


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    s, d = request.app[SETTINGS], request.app[DASH]
    return _json(
        {
            "topic_prefix": s.topic_prefix,
            "jaeger_api": s.jaeger_ui,
            "jaeger_ui_link": d.jaeger_ui_link,
            "artifact_dir": str(s.artifact_dir),
        }
    )


@routes.get("/api/runs")
async def runs(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    return _json(request.app[MODEL].summaries(status))


@routes.get("/api/runs/{run_id}")
async def run(request: web.Request) -> web.Response:
    view = request.app[MODEL].runs.get(request.match_info["run_id"])
    if view is None:
        raise web.HTTPNotFound(text="no such run")
    return _json(view.detail())


@routes.get("/api/runs/{run_id}/trace")
async def trace(request: web.Request) -> web.Response:
    view = request.app[MODEL].runs.get(request.match_info["run_id"])
    if view is None or not view.trace_id:
        raise web.HTTPNotFound(text="no trace for this run")
    try:
        found = await trace_data.fetch(
            request.app[HTTP], request.app[SETTINGS].jaeger_ui, view.trace_id
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _json({"error": f"cannot reach Jaeger: {exc}"}, status=502)
    link = request.app[DASH].jaeger_ui_link
    found["jaeger_ui"] = f"{link}/trace/{view.trace_id}" if link else None
    return _json(found)


def _same_origin_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send JSON")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text="cross-origin write refused")


def _written_run(request: web.Request) -> tuple[str, Any]:
    """The run a write names (its id and view): JSON from this origin, a run the page knows."""
    _same_origin_json(request)
    run_id = request.match_info["run_id"]
    view = request.app[MODEL].runs.get(run_id)
    if view is None:
        raise web.HTTPNotFound(text="no such run")
    return run_id, view


@routes.post("/api/runs/{run_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    run_id, view = _written_run(request)
    if view.state.terminal:
        return _json({"error": f"run is already {view.state.status}"}, status=409)
    body = await request.json()
    reason = str(body.get("reason") or "cancelled from the dashboard")[:500]
    await client.cancel(request.app[SETTINGS], run_id, reason)
    return _json({"cancel_requested": run_id, "reason": reason})


@routes.post("/api/runs/{run_id}/continue")
async def continue_run(request: web.Request) -> web.Response:
    """Take a run that succeeded on for `generations` more (the CLI's `continue`)."""
    run_id, view = _written_run(request)
    if view.state.status != "succeeded":
        return _json(
            {"error": f"run is {view.state.status}: only a run that succeeded goes on"}, 409
        )
    body = await request.json()
    generations = body.get("generations") if isinstance(body, dict) else None
    if type(generations) is not int or not 1 <= generations <= 1000:
        return _json({"error": "generations: a whole number from 1 to 1000"}, status=400)
    await client.continue_run(request.app[SETTINGS], run_id, generations, None)
    return _json({"continue_requested": run_id, "generations": generations})


def _letters_filter(query: Any) -> dlq.Filter:
    def text(name: str) -> str | None:
        value = query.get(name)
        return str(value) if value else None

    try:
        since = dlq.parse_when(query["since"]) if query.get("since") else None
        until = dlq.parse_when(query["until"]) if query.get("until") else None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"bad time: {exc}") from exc
    return dlq.Filter(
        stage=text("stage"), error=text("error"), topic=text("topic"), since_ms=since,
        until_ms=until,
    )  # fmt: skip


@routes.get("/api/dead-letters")
async def letters(request: web.Request) -> web.Response:
    found = await dlq.read_dead_letters(request.app[SETTINGS], _letters_filter(request.query))
    return _json([dlq.summary(dl) for dl in found])


def _record(request: web.Request) -> tuple[int, int]:
    try:
        return int(request.match_info["partition"]), int(request.match_info["offset"])
    except ValueError as exc:
        raise web.HTTPBadRequest(text="PARTITION and OFFSET are integers") from exc


@routes.get("/api/dead-letters/{partition}/{offset}")
async def letter(request: web.Request) -> web.Response:
    partition, offset = _record(request)
    only = dlq.Filter(records=frozenset([(partition, offset)]), partition=partition)
    found = await dlq.read_dead_letters(request.app[SETTINGS], only)
    if not found:
        raise web.HTTPNotFound(text="no such dead letter")
    return _json(dlq.detail(found[0], preview=64 * 1024))


@routes.post("/api/dead-letters/redrive")
async def redrive(request: web.Request) -> web.Response:
    _same_origin_json(request)
    body = await request.json()
    raw = body.get("records") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not raw or len(raw) > MAX_REDRIVE:
        raise web.HTTPBadRequest(text=f"records: a list of 1..{MAX_REDRIVE} [partition, offset]")
    try:
        wanted = frozenset((int(p), int(o)) for p, o in raw)
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text="records: [partition, offset] pairs of integers") from exc
    settings = request.app[SETTINGS]
    found = await dlq.read_dead_letters(settings, dlq.Filter(records=wanted))
    missing = wanted - {(dl.partition, dl.offset) for dl in found}
    if missing:
        return _json({"error": f"no dead letter at {sorted(missing)}"}, status=404)
    written = await dlq.redrive(settings, found)
    return _json(
        {
            "redriven": [
                {"from": [dl.partition, dl.offset], "to": {"topic": t, "partition": p, "offset": o}}
                for dl, (t, p, o) in zip(found, written, strict=True)
            ]
        }
    )


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `run` event with the run's summary whenever it changes."""
    hub, model = request.app[HUB], request.app[MODEL]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    queue: asyncio.Queue[str] = asyncio.Queue()
    hub.queues.add(queue)
    try:
        await resp.write(b"retry: 1000\n\n")
        while True:
            try:
                run_id = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await resp.write(b": heartbeat\n\n")
                continue
            if not run_id:
                break
            view = model.runs.get(run_id)
            if view is not None:
                data = json.dumps(view.summary(), allow_nan=False)
                await resp.write(f"event: run\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.queues.discard(queue)
    return resp


def create_app(
    settings: Settings, dash: DashboardSettings, *, follow: bool = True
) -> web.Application:
    """The app; `follow=False` leaves the log unread (for tests of the pages alone)."""
    app = web.Application()
    app[SETTINGS] = settings
    app[DASH] = dash
    app[MODEL] = ReadModel()
    app[HUB] = Hub()
    app.router.add_routes(routes)
    if follow:
        app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_streams)
    return app


async def _close_streams(app: web.Application) -> None:
    app[HUB].close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    reader = LogReader(app[SETTINGS], app[MODEL], app[HUB].publish)
    reader.start()
    app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    yield
    await reader.stop()
    await app[HTTP].close()


def serve(settings: Settings, dash: DashboardSettings) -> int:
    print(f"thunderhelm dashboard on http://{dash.host}:{dash.port}/", flush=True)
    web.run_app(
        create_app(settings, dash), host=dash.host, port=dash.port, print=None, shutdown_timeout=5.0
    )
    return 0
