"""Live progress of a run for a person at a terminal: generation k/N, best, elapsed, ETA.

`watch`, `submit --wait` and `run` feed it one call per finished generation
and one per finished candidate (k of N in the generation, best so far).
On a terminal it is a rich progress bar with the event lines scrolling above
it; elsewhere (a pipe, a log file, --json) it is `None` and the callers print
their plain lines instead, so scripts never see control codes.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """A progress bar over a run's generations, with lines printed above it."""

    def __init__(self, console: Console, run_id: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}  best {task.fields[best]}"),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(run_id, total=None, best="-", unit="generations")
        # A second row, drawn from the first candidate on: k of N in this generation.
        self._candidates: Any = None

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def line(self, text: str) -> None:
        """An event line, printed above the bar."""
        self._progress.console.print(text, markup=False, highlight=False)

    def total(self, generations: int) -> None:
        if generations > 0:
            self._progress.update(self._task, total=generations)

    def generation(self, done: int, best: Any) -> None:
        """`done` generations are complete; `best` is the best fitness so far."""
        self._progress.update(self._task, completed=done, best=_fitness(best))
        if self._candidates is not None:
            self._progress.update(self._candidates, completed=0, best=_fitness(best))

    def candidate(self, done: int, population: int, best: Any) -> None:
        """`done` of the generation's `population` candidates have an outcome."""
        shown = _fitness(best)
        if self._candidates is None:
            self._candidates = self._progress.add_task(
                "  this generation", total=None, best=shown, unit="candidates"
            )
        total = population if population > 0 else None
        self._progress.update(self._candidates, completed=done, total=total, best=shown)
        self._progress.update(self._task, best=shown)


def _fitness(best: Any) -> str:
    return "-" if best is None else f"{float(best):.4f}"
