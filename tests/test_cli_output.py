"""What a terminal gets: the live run progress, the runs table and the trace tree.

Rendered into a recording rich console, so these need neither a broker nor
a real terminal. The plain and JSON output are checked in test_cli_json.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import get_args

from rich.console import Console

from thunderhelm.streams.cli.log_commands import Status
from thunderhelm.streams.cli.progress import RunProgress
from thunderhelm.streams.clients import replay, trace_view
from thunderhelm.streams.domain import saga

DATA = Path(__file__).resolve().parent / "data"


def screen() -> Console:
    return Console(file=io.StringIO(), width=160, record=True, force_terminal=True)


def test_progress_shows_generation_k_of_n_best_so_far_elapsed_and_eta() -> None:
    console = screen()
    with RunProgress(console, "run-7") as view:
        view.total(4)
        view.line("[run-7] generation 1: best 0.5000")
        view.generation(1, 0.5)
        view.generation(3, 0.8125)
    drawn = console.export_text()
    assert "[run-7] generation 1: best 0.5000" in drawn
    last = [line for line in drawn.splitlines() if line.startswith("run-7")][-1]
    assert "3/4 generations" in last and "best 0.8125" in last
    assert "elapsed 0:00:0" in last and "eta" in last


def test_progress_without_a_total_yet_still_draws() -> None:
    console = screen()
    with RunProgress(console, "run-8") as view:
        view.generation(0, None)
    assert "best -" in console.export_text()


def test_the_runs_table_has_a_row_per_run() -> None:
    rows = [
        {"run_id": "a", "status": "succeeded", "generation": 2, "generations": 2,
         "evaluations": 7, "best_fitness": 0.91234, "artifact": "/x/a/model.json"},
        {"run_id": "b", "status": "running", "generation": 1, "generations": 4,
         "evaluations": 3, "best_fitness": None, "artifact": None},
    ]  # fmt: skip
    console = screen()
    console.print(replay.runs_table(rows))
    drawn = console.export_text()
    assert "2 runs" in drawn
    assert any(
        "a" in line and "succeeded" in line and "0.9123" in line for line in drawn.splitlines()
    )
    assert any("running" in line and "1/4" in line for line in drawn.splitlines())


def test_the_trace_tree_has_a_line_per_span() -> None:
    trace = json.loads((DATA / "jaeger_run_trace.json").read_text())["data"][0]
    console = screen()
    console.print(trace_view.rich_tree(trace))
    drawn = console.export_text()
    assert drawn.count("\n") == len(trace["spans"]) + 1  # the header, then one line a span
    assert trace_view.render(trace).splitlines()[0] in drawn
    assert "generation 2" in drawn and "train candidate 2." in drawn


def test_an_error_span_is_flagged_in_the_tree() -> None:
    trace = json.loads((DATA / "jaeger_dead_letter_trace.json").read_text())["data"][0]
    console = screen()
    console.print(trace_view.rich_tree(trace))
    plain = trace_view.render(trace)
    assert ("✗ ERROR" in console.export_text()) == ("✗ ERROR" in plain)


def test_the_dead_letter_table_has_a_row_per_record() -> None:
    from thunderhelm.streams.cli import dlq_commands
    from thunderhelm.streams.clients.dead_letters import DeadLetter, summary

    letter = DeadLetter(
        partition=1,
        offset=42,
        timestamp_ms=1_700_000_000_000,
        key=b"run-1",
        value=b"\xff not json",
        headers=(
            ("dlq.stage", b"decode"),
            ("dlq.error.class", b"DecodeError"),
            ("dlq.error.message", b"not JSON"),
            ("dlq.original.topic", b"thunderhelm.run-requests"),
            ("dlq.original.partition", b"0"),
            ("dlq.original.offset", b"7"),
            ("dlq.attempt", b"1"),
        ),
    )
    console = screen()
    console.print(dlq_commands._table([summary(letter)], "1 of 1 matching dead letters"))
    drawn = console.export_text()
    assert "1 of 1 matching dead letters" in drawn
    (row,) = [line for line in drawn.splitlines() if "1:42" in line]
    assert "decode" in row and "DecodeError" in row and "thunderhelm.run-requests[0]@7" in row


def test_progress_shows_candidates_k_of_n_in_the_generation() -> None:
    console = screen()
    with RunProgress(console, "run-9") as view:
        view.total(3)
        view.candidate(1, 8, 0.25)
        view.candidate(5, 8, 0.75)
    drawn = console.export_text()
    rows = [line for line in drawn.splitlines() if "this generation" in line]
    assert rows and "5/8 candidates" in rows[-1] and "best 0.7500" in rows[-1]
    last_frame = drawn.rsplit("run-9", 1)[-1]  # the generations row as last drawn
    assert "0/3 generations" in last_frame and "best 0.7500" in last_frame.split("\n")[0]


def test_same_outcome_compares_status_best_network_and_fitness() -> None:
    from thunderhelm.streams.clients.client import same_outcome

    first = {"status": "succeeded", "best": {"genome": {"levels": [[1]]}, "fitness": 0.9}}
    assert same_outcome(first, {**first})
    assert not same_outcome(first, {**first, "status": "failed"})
    assert not same_outcome(first, {**first, "best": {**first["best"], "fitness": 0.8}})
    assert not same_outcome(first, {**first, "best": {**first["best"], "genome": {"levels": []}}})


def test_runs_status_filter_offers_exactly_the_sagas_statuses() -> None:
    """`thunderhelm runs --status` lists what the fold can say, no more and no less."""
    assert {status.value for status in Status} == set(get_args(saga.Status))
