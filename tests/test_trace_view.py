"""`thunderhelm trace` rendering, from traces recorded from the real Jaeger's API.

`data/jaeger_run_trace.json` is a three-generation run (client producer span,
worker process/send spans, saga decisions, generations, candidate trainings);
`data/jaeger_dead_letter_trace.json` an input that was dead-lettered. Tags
were trimmed to the ones the view reads; nothing else was changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thunderhelm.streams.clients import trace_view

DATA = Path(__file__).resolve().parent / "data"


def recorded(name: str) -> dict[str, Any]:
    body = json.loads((DATA / name).read_text())
    trace: dict[str, Any] = body["data"][0]
    return trace


def test_the_run_trace_is_one_tree_rooted_at_the_producer() -> None:
    trace = recorded("jaeger_run_trace.json")
    roots = trace_view.build_tree(trace)
    assert len(roots) == 1
    root = roots[0]
    assert root.name.startswith("send ") and root.name.endswith(".run-requests")
    assert root.service == "thunderhelm-test-client" and root.parent_id is None
    (process,) = root.children
    assert process.name.startswith("process ") and process.service == "thunderhelm-worker"
    generations = [c for c in process.children if c.name.startswith("generation ")]
    assert [g.name for g in generations] == ["generation 0", "generation 1", "generation 2"]
    for generation in generations:
        number = generation.name.split()[1]
        assert generation.children
        assert all(c.name.startswith(f"train candidate {number}.") for c in generation.children)
        starts = [c.start_us for c in generation.children]
        assert starts == sorted(starts)
    assert process.children[-1].name.endswith(".run-results")


def test_render_draws_every_span_once_with_timings_and_no_colour_off_a_tty() -> None:
    trace = recorded("jaeger_run_trace.json")
    text = trace_view.render(trace, color=False)
    lines = text.splitlines()
    assert lines[0].startswith(f"trace {trace['traceID']}  {len(trace['spans'])} spans")
    assert "thunderhelm-test-client" in lines[0] and "error" not in lines[0]
    assert len(lines) == 1 + len(trace["spans"])
    assert "\x1b[" not in text
    assert lines[1].startswith("send ") and "[thunderhelm-test-client]" in lines[1]
    assert lines[2].startswith("└─ process ")
    candidate = next(line for line in lines if "train candidate 0.0" in line)
    assert candidate.startswith("   │  ├─ ") or candidate.startswith("   │  └─ ")
    for field in ("acc=", "val_loss=", "epochs=", "params=", "interp="):
        assert field in candidate
    assert "✗" not in text


def test_errors_are_flagged_and_red_on_a_tty() -> None:
    trace = recorded("jaeger_dead_letter_trace.json")
    plain = trace_view.render(trace, color=False)
    assert "thunderhelm.event.dead-lettered" in plain
    dlq_line = next(line for line in plain.splitlines() if "dead-lettered" in line)
    assert "✗ ERROR" in dlq_line and "stage=decode" in dlq_line and "error=" in dlq_line
    assert "error(s)" in plain.splitlines()[0]
    coloured = trace_view.render(trace, color=True)
    assert f"{trace_view.RED}thunderhelm.event.dead-lettered{trace_view.RESET}" in coloured


def test_a_span_whose_parent_is_not_in_the_trace_is_a_root_and_says_so() -> None:
    trace = recorded("jaeger_run_trace.json")
    # Drop the client's span: the worker's process span loses its parent.
    trace["spans"] = [
        s
        for s in trace["spans"]
        if not s["operationName"].endswith("run-requests")
        or s["operationName"].startswith("process ")
    ]
    roots = trace_view.build_tree(trace)
    assert [r.name.split()[0] for r in roots] == ["process"]
    assert "(parent not in trace)" in trace_view.render(trace).splitlines()[1]


@pytest.mark.parametrize(
    ("us", "text"),
    [(0, "0µs"), (999, "999µs"), (1500, "1.5ms"), (2_340_000, "2.34s"), (83_000_000, "1m23.0s")],
)
def test_durations(us: int, text: str) -> None:
    assert trace_view.format_duration(us) == text


def test_an_empty_trace_renders_a_line() -> None:
    assert trace_view.render({"traceID": "abc", "spans": []}) == "trace abc: no spans"


def test_a_recorded_run_trace_is_complete_and_its_first_spans_are_not() -> None:
    trace = recorded("jaeger_run_trace.json")
    assert trace_view.is_complete(trace)
    first = {**trace, "spans": sorted(trace["spans"], key=lambda s: s["startTime"])[:2]}
    assert not trace_view.is_complete(first)


def test_fetch_trace_waits_past_a_partial_trace_until_the_run_ended() -> None:
    """Jaeger (a loopback HTTP server here) first has two spans, then the rest."""
    import http.server
    import threading

    whole = recorded("jaeger_run_trace.json")
    partial = {**whole, "spans": sorted(whole["spans"], key=lambda s: s["startTime"])[:2]}
    answers = [partial, partial, whole]

    class Jaeger(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": [answers.pop(0) if len(answers) > 1 else answers[0]]})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jaeger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        got = trace_view.fetch_trace(base, whole["traceID"], wait_s=20)
        assert got is not None and len(got["spans"]) == len(whole["spans"])
        answers[:] = [partial]
        cut = trace_view.fetch_trace(base, whole["traceID"], wait_s=0)
        assert cut is not None and len(cut["spans"]) == 2
    finally:
        server.shutdown()
