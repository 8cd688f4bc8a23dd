"""The event log of a local run: one JSON-lines file of CloudEvents per run.

`thunderhelm run` appends each lifecycle event of a run here, in the same
envelope and with the same data the worker writes to run-events, and folds
the file with the same saga to pick a run up again. It is a file owned by one
process (held with `flock` while a run is going): no partitions, no
consumers, no other writer.

Each append is written, flushed and fsynced before the run takes its next
step, so what a crash leaves is every event but, at worst, a torn last line,
which reading drops (the step it recorded is done again).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thunderhelm.schemas.codec import DecodeError, EnvelopeError, decode_record, encode_event
from thunderhelm.schemas.envelope import CloudEvent
from thunderhelm.streams.domain import saga
from thunderhelm.streams.wire.events import to_domain
from thunderhelm.streams.wire.failures import InputRejected

SUFFIX = ".jsonl"


class LocalLogError(ValueError):
    """The log cannot be used: a bad run id for a file name, or a corrupt line."""


def log_path(directory: Path, run_id: str) -> Path:
    """`directory/<run_id>.jsonl`, refusing any run id that is not a plain file name."""
    name = f"{run_id}{SUFFIX}"
    plain = (
        bool(run_id)
        and not run_id.startswith(".")
        and "/" not in run_id
        and "\\" not in run_id
        and "\x00" not in run_id
        and Path(name).name == name
    )
    if not plain:
        raise LocalLogError(f"run id {run_id!r} is not a plain file name")
    path = directory / name
    if path.resolve().parent != directory.resolve():  # a symlinked or odd name escaping the dir
        raise LocalLogError(f"run id {run_id!r} does not name a file in {directory}")
    return path


class LocalLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the log for this process: a second run with the same id is refused."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LocalLogError(f"{self.path} is in use by another run") from None
            yield  # the lock goes with the handle

    def records(self) -> list[CloudEvent]:
        """Every complete record, in order; a torn last line is cut off the file."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            # A write the process did not live to finish: its step runs again.
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
                os.fsync(handle.fileno())
        return list(self._decode(complete))

    def _decode(self, raw: bytes) -> Iterator[CloudEvent]:
        for number, line in enumerate(raw.splitlines(), start=1):
            try:
                yield decode_record(line, {})
            except (DecodeError, EnvelopeError) as exc:
                raise LocalLogError(f"{self.path}:{number}: {exc}") from None

    def fold(self) -> tuple[saga.RunState | None, int]:
        """The run's state folded from the log, and how many records it holds."""
        state: saga.RunState | None = None
        records = self.records()
        for number, record in enumerate(records, start=1):
            try:
                event = to_domain(record)
            except InputRejected as exc:
                raise LocalLogError(f"{self.path}:{number}: {exc}") from None
            state = saga.evolve(state, event)
        return state, len(records)

    def append(self, record: CloudEvent) -> None:
        """Write one record as a line and make it durable before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(encode_event(record) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
