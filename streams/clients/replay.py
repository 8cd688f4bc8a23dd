"""`thunderhelm runs` and `thunderhelm replay`: run state from the event log alone.

`replay` folds every run's events from the start of `run-events` with the same
pure `saga.evolve` the worker uses, reads the worker table's changelog (the
state the workers recover from), and reports every run where the two differ.
`runs` lists runs from the fold, optionally filtered by status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.clients.client import read_topic
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.wire.events import to_domain
from thunderhelm.streams.wire.failures import InputRejected


@dataclass(frozen=True)
class Replayed:
    states: dict[str, saga.RunState]
    logs: dict[str, list[saga.Event]]
    undecodable: int


def fold(records: Iterable[tuple[bytes | None, bytes | None]]) -> Replayed:
    states: dict[str, saga.RunState] = {}
    logs: dict[str, list[saga.Event]] = {}
    bad = 0
    for _key, value in records:
        try:
            event = to_domain(decode_record(value, {}))
        except (ValueError, InputRejected):
            bad += 1
            continue
        logs.setdefault(event.run_id, []).append(event)
        after = saga.evolve(states.get(event.run_id), event)
        if after is not None:
            states[event.run_id] = after
    return Replayed(states, logs, bad)


async def replay(settings: Settings) -> tuple[Replayed, dict[str, dict[str, Any]]]:
    events = await read_topic(settings, settings.run_events)
    table: dict[str, dict[str, Any]] = {}
    for key, value in await read_topic(settings, f"{settings.app_id}-runs-changelog"):
        if key is None:
            continue
        run_id = key.decode("utf-8", "replace")
        if value is None:
            table.pop(run_id, None)
        else:
            table[run_id] = json.loads(value)
    return fold(events), table


def differences(replayed: Replayed, table: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per run, the fields where the fold of the log and the worker table disagree."""
    found: dict[str, list[str]] = {}
    for run_id in sorted(set(replayed.states) | set(table)):
        folded = replayed.states.get(run_id)
        stored = table.get(run_id)
        if folded is None or stored is None:
            found[run_id] = ["only in the table" if folded is None else "not in the table"]
            continue
        mine = json.loads(json.dumps(folded.to_dict()))
        fields = [k for k in mine if k != "seen_ids" and mine[k] != stored.get(k)]
        if fields:
            found[run_id] = fields
    return found


def run_rows(replayed: Replayed, status: str | None) -> list[dict[str, Any]]:
    """One object per run (the `runs --json` shape), sorted by run id."""
    rows = []
    for run_id, state in sorted(replayed.states.items()):
        if status and state.status != status:
            continue
        rows.append(
            {
                "run_id": run_id,
                "status": state.status,
                "generation": state.generation,
                "generations": state.total_generations,
                "evaluations": state.evaluations,
                "best_fitness": (state.best or {}).get("fitness"),
                "artifact": None if state.result is None else state.result.artifact,
            }
        )
    return rows


def render_runs(replayed: Replayed, status: str | None) -> str:
    rows = []
    for row in run_rows(replayed, status):
        best = row["best_fitness"]
        rows.append(
            f"{row['run_id']:<32} {row['status']:<14} gen {row['generation']}/{row['generations']}"
            f"  evals {row['evaluations']:<5} best {best if best is None else round(best, 4)}"
            + (f"  artifact {row['artifact']}" if row["artifact"] else "")
        )
    return "\n".join(rows) if rows else "(no runs)"


def runs_table(rows: list[dict[str, Any]]) -> Any:
    """The runs as a rich table, for a terminal."""
    from rich.table import Table

    colours = {"succeeded": "green", "failed": "red", "rejected": "red", "cancelled": "yellow"}
    table = Table(title=f"{len(rows)} runs", title_justify="left")
    for name in ("run", "status", "generation", "evaluations", "best", "artifact"):
        table.add_column(name, no_wrap=name != "artifact")
    for row in rows:
        best = row["best_fitness"]
        colour = colours.get(row["status"], "cyan")
        table.add_row(
            row["run_id"],
            f"[{colour}]{row['status']}[/]",
            f"{row['generation']}/{row['generations']}",
            str(row["evaluations"]),
            "-" if best is None else f"{best:.4f}",
            row["artifact"] or "",
        )
    return table


def comparison(replayed: Replayed, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `replay --json` shape: counts, per-run differences and invariant violations."""
    diffs = differences(replayed, table)
    return {
        "runs_in_log": len(replayed.states),
        "runs_in_table": len(table),
        "undecodable_records": replayed.undecodable,
        "differences": diffs,
        "invariant_violations": _violations(replayed),
        "agree": not diffs,
    }


def _violations(replayed: Replayed) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for run_id, log in replayed.logs.items():
        state = replayed.states.get(run_id)
        if state is None or not state.terminal or state.status == "rejected":
            continue  # unfinished or rejected runs have no terminal event yet
        problems = list(violations(log))
        if problems:
            found[run_id] = problems
    return found


def render_replay(replayed: Replayed, table: dict[str, dict[str, Any]]) -> tuple[str, int]:
    diffs = differences(replayed, table)
    lines = [
        f"runs folded from the log: {len(replayed.states)}; in the table changelog: {len(table)};"
        f" undecodable records: {replayed.undecodable}"
    ]
    for run_id, fields in diffs.items():
        lines.append(f"DIFF {run_id}: {', '.join(fields)}")
    for run_id, problems in _violations(replayed).items():
        lines.extend(f"INVARIANT {run_id}: {problem}" for problem in problems)
    if not diffs:
        lines.append("table and event log agree")
    return "\n".join(lines), (1 if diffs else 0)
