"""The dashboard's read model and pages without a broker: the fold, the API, the guards."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import encode_event
from thunderhelm.schemas.envelope import CloudEvent
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.dashboard.read_model import ReadModel
from thunderhelm.streams.dashboard.server import MODEL, create_app
from thunderhelm.streams.dashboard.settings import DashboardSettings
from thunderhelm.streams.dashboard.trace_data import waterfall

TRACE = "0af7651916cd43dd8448eb211c80319c"


def record(kind: str, data: dict[str, Any], time: str, event_id: str | None = None) -> bytes:
    event = CloudEvent(
        specversion="1.0",
        id=event_id or str(uuid.uuid4()),
        source="tests",
        type=kind,
        subject=data["run_id"],
        time=time,
        data=data,
    )
    return encode_event(event)


def generation(run_id: str, g: int, best: float, mean: float) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "generation": g,
        "fitnesses": [best, mean],
        "candidates": [
            {"index": 0, "fitness": best, "val_accuracy": best, "params": 10, "status": "ok",
             "started_at": 1.0, "secret": "not shown"},
            {"index": 1, "fitness": None, "val_accuracy": None, "params": 12, "status": "error"},
        ],
        "ga_state": {"generation": g + 1},
        "evaluations": 2 * (g + 1),
        "best_fitness": best,
        "mean_fitness": mean,
        "best": {"fitness": best},
    }  # fmt: skip


def folded_run(model: ReadModel, run_id: str = "r1") -> list[bytes]:
    request = {"run_id": run_id, "ga": {"generations": 2}}
    records = [
        record(ev.RUN_ACCEPTED, {"run_id": run_id, "request": request,
                                 "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
               "2026-01-01T00:00:00.000Z"),
        record(ev.RUN_STARTED, {"run_id": run_id, "ga_state": {}}, "2026-01-01T00:00:01.000Z"),
        record(ev.GENERATION_COMPLETED, generation(run_id, 0, 0.5, 0.25),
               "2026-01-01T00:00:02.000Z"),
        record(ev.GENERATION_COMPLETED, generation(run_id, 1, 0.75, 0.5),
               "2026-01-01T00:00:04.000Z"),
    ]  # fmt: skip
    for value in records:
        model.apply_event(value, {})
    return records


def test_the_fold_keeps_generations_candidates_and_the_trace_id() -> None:
    model = ReadModel()
    records = folded_run(model)
    view = model.runs["r1"]
    assert view.summary() == {
        "run_id": "r1",
        "status": "running",
        "generation": 2,
        "generations": 2,
        "best_fitness": 0.75,
        "evaluations": 4,
        "duration_s": 4.0,
        "started_at": "2026-01-01T00:00:00.000Z",
    }
    detail = view.detail()
    assert [h["best_fitness"] for h in detail["history"]] == [0.5, 0.75]
    assert [h["mean_fitness"] for h in detail["history"]] == [0.25, 0.5]
    assert [len(g) for g in detail["candidates"]] == [2, 2]
    assert "secret" not in detail["candidates"][0][0]
    assert view.trace_id == TRACE
    # A redelivered event is folded once: no second row of candidates, no change reported.
    assert model.apply_event(records[2], {}) is None
    assert [len(g) for g in view.candidates] == [2, 2]


def succeeded(**fields: Any) -> dict[str, Any]:
    """A result of the contract's shape: the worker refuses events whose result is not."""
    return {
        "run_id": "r1",
        "status": "succeeded",
        "best": None,
        "generations": 1,
        "evaluations": 4,
        "duration_s": 9.5,
        "artifact": "/a/model.npz",
        "error": None,
        **fields,
    }


def test_the_result_and_bad_records() -> None:
    model = ReadModel()
    folded_run(model)
    result = succeeded()
    done = record(ev.RUN_SUCCEEDED, {"run_id": "r1", "result": result}, "2026-01-01T00:00:05Z")
    assert model.apply_event(done, {}) == "r1"
    assert model.runs["r1"].summary()["status"] == "succeeded"
    assert model.runs["r1"].summary()["duration_s"] == 9.5
    assert model.apply_event(b"\xff not json", {}) is None
    assert model.apply_event(b'{"specversion": "1.0"}', {}) is None
    assert model.undecodable == 2
    assert [r["run_id"] for r in model.summaries("running")] == []
    assert [r["run_id"] for r in model.summaries("succeeded")] == ["r1"]


def test_waterfall_rows_are_depth_first_with_offsets() -> None:
    trace = {
        "traceID": TRACE,
        "processes": {"p1": {"serviceName": "thunderhelm-worker"}},
        "spans": [
            {"traceID": TRACE, "spanID": "b", "operationName": "generation 0", "processID": "p1",
             "startTime": 1_000_100, "duration": 50,
             "references": [{"refType": "CHILD_OF", "traceID": TRACE, "spanID": "a"}],
             "tags": [{"key": "thunderhelm.candidates", "value": 4}]},
            {"traceID": TRACE, "spanID": "a", "operationName": "process", "processID": "p1",
             "startTime": 1_000_000, "duration": 400, "references": [], "tags": []},
        ],
    }  # fmt: skip
    rows = waterfall(trace)
    assert rows["duration_us"] == 400
    assert [(r["name"], r["depth"], r["offset_us"]) for r in rows["spans"]] == [
        ("process", 0, 0),
        ("generation 0", 1, 100),
    ]
    assert rows["spans"][1]["attributes"] == {"thunderhelm.candidates": 4}


async def test_pages_api_and_write_guards() -> None:
    app = create_app(Settings(), DashboardSettings(), follow=False)
    folded_run(app[MODEL])
    async with TestClient(TestServer(app)) as http:
        page = await http.get("/")
        assert page.status == 200 and "app.js" in await page.text()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await http.get("/static/app.js")).status == 200
        for bad in ("/static/..%2Fserver.py", "/static/server.py", "/static/nothing.js"):
            assert (await http.get(bad)).status == 404, bad
        runs = await (await http.get("/api/runs")).json()
        assert [r["run_id"] for r in runs] == ["r1"]
        assert await (await http.get("/api/runs?status=failed")).json() == []
        detail = await (await http.get("/api/runs/r1")).json()
        assert detail["trace_id"] == TRACE
        assert (await http.get("/api/runs/nope")).status == 404
        # Only a run that succeeded goes on.
        running = await http.post("/api/runs/r1/continue", json={"generations": 2})
        assert running.status == 409 and "running" in (await running.json())["error"]
        assert (await http.post("/api/runs/nope/continue", json={"generations": 2})).status == 404
        # Writes need JSON from the page's own origin: a form post from elsewhere is refused.
        form = await http.post("/api/runs/r1/cancel", data={"reason": "x"})
        assert form.status == 415
        foreign = await http.post(
            "/api/runs/r1/cancel",
            data=json.dumps({}),
            headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
        )
        assert foreign.status == 403
        bad = await http.post(
            "/api/dead-letters/redrive",
            data=json.dumps({"records": "all"}),
            headers={"Content-Type": "application/json"},
        )
        assert bad.status == 400


def test_a_continued_run_shows_its_next_result_not_the_one_it_went_on_from() -> None:
    model = ReadModel()
    folded_run(model)
    result = succeeded(generations=2, revision=1)
    model.apply_event(
        record(ev.RUN_SUCCEEDED, {"run_id": "r1", "result": result}, "2026-01-01T00:00:05.000Z"),
        {},
    )
    state = model.runs["r1"].state
    more = {
        "run_id": "r1",
        "generations": 1,
        "request": {**dict(state.request or {}), "ga": {"generations": 3}},
        "ga_state": {},
        "generation": 2,
        "evaluations": 4,
        "revision": 2,
    }
    model.apply_event(record(ev.RUN_CONTINUED, more, "2026-01-01T00:00:06.000Z"), {})
    view = model.runs["r1"]
    assert view.state.status == "running" and view.result is None
    # The first result, read from run-results after the continue: not the run's now.
    published = CloudEvent(
        specversion="1.0", id="r1/result", source="t", type="thunderhelm.run.result", data=result
    )
    assert model.apply_result(encode_event(published), {}) is None and view.result is None
    assert view.summary()["generations"] == 3
