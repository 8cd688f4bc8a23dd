"""Invariants of one run's event log, checked by tests and the fault benchmark.

The raw log, not just the fold, must hold them: one terminal event,
generations strictly increasing, nothing after the terminal event (notes about
dead-lettered inputs and refused continues excepted: they record, they do not
change the run) but a `run.continued`, which opens the run again until its
next terminal event.
"""

from __future__ import annotations

from collections.abc import Sequence

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import GenerationCompleted
from thunderhelm.streams.domain import saga


def violations(events: Sequence[saga.Event]) -> list[str]:
    problems: list[str] = []
    terminal_at: int | None = None
    last_generation = -1
    for position, event in enumerate(events):
        if event.type in (ev.EVENT_DEAD_LETTERED, ev.CONTINUE_REJECTED):
            continue
        if event.type == ev.RUN_CONTINUED and terminal_at is not None:
            terminal_at = None  # a later revision of the run begins
            continue
        if terminal_at is not None:
            problems.append(f"#{position} {event.type} after terminal event #{terminal_at}")
            continue
        if isinstance(event.data, GenerationCompleted):
            generation = event.data.generation
            if generation <= last_generation:
                problems.append(
                    f"#{position} generation {generation} after generation {last_generation}"
                )
            last_generation = max(last_generation, generation)
        if event.type in ev.TERMINAL_TYPES:
            terminal_at = position
    if terminal_at is None:
        problems.append("no terminal event")
    return problems
