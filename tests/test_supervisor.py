"""The supervised worker: restarts after a native crash, backoff, clean stops.

The backoff schedule is tested as a pure function; the restart and stop
behaviour on real processes, first with a tiny stand-in child (no broker),
then with a real `thunderhelm worker` against the broker, whose pool-holding
child is sent SIGSEGV in the middle of a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kafka_helpers import REPO, WorkerProcess, fresh_env
from tests.test_faults import events, of, request, results, start, wait_for
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.worker.supervisor import Backoff, describe_death, started_pids

# A supervisor with a fast backoff, its child command taken from argv.
SUPERVISE = """
import logging, sys
from thunderhelm.streams.worker.supervisor import LOG_FORMAT, Backoff, Supervisor
logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
backoff = Backoff(first_s=0.05, cap_s=0.2, reset_after_s=60.0)
sys.exit(Supervisor(sys.argv[2:], backoff=backoff, grace_s=float(sys.argv[1])).run())
"""

# A stand-in worker: crashes itself `crashes` times (counted in a file), then
# serves until SIGTERM, noting that it got it; `exit` ends it with that code.
CHILD = """
import os, signal, sys, time
from pathlib import Path
count, crashes, mode, marker = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
if n < crashes:
    os.kill(os.getpid(), signal.SIGSEGV)
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
def on_term(signum, frame):
    marker.write_text(str(os.getpid()))
    if mode != "stubborn":
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(0.05)
"""


def wait_until(check: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    """Poll `check`; on time out, fail with `what()` (read then, e.g. a log's tail)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what())
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan's parent may not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class StandIn:
    """A supervisor process running the stand-in child, its output in a log file."""

    def __init__(self, tmp: Path, *, crashes: int = 0, mode: str = "serve", grace_s: float = 5):
        self.log = tmp / "supervisor.log"
        self.marker = tmp / "got-sigterm"
        child = [sys.executable, "-c", CHILD, str(tmp / "count"), str(crashes), mode]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SUPERVISE, str(grace_s), *child, str(self.marker)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> list[int]:
        return started_pids(self.text())

    def close(self) -> None:
        # The whole group, even after the supervisor has gone: a child it left
        # behind (the bug one test looks for) must not outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    made: list[StandIn] = []

    def make(**kwargs: Any) -> StandIn:
        made.append(StandIn(tmp_path, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


# --- the policy, without processes ----------------------------------------------


def test_backoff_doubles_from_half_a_second_to_a_cap_and_resets_after_a_healthy_child() -> None:
    b = Backoff()
    assert [b.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30  # no overflow after days of failures
    streak = 0
    for _ in range(3):  # three quick deaths in a row
        streak = b.next_streak(streak, uptime_s=1.0)
    assert streak == 3 and b.delay(streak) == 2
    # A child that stayed up a while was healthy: its death starts over.
    assert b.next_streak(streak, uptime_s=b.reset_after_s) == 1
    assert b.delay(b.next_streak(7, uptime_s=3600)) == 0.5


def test_a_death_is_described_by_its_signal_or_exit_code() -> None:
    assert describe_death(1234, -signal.SIGSEGV) == "worker process 1234 killed by SIGSEGV"
    assert describe_death(1234, -signal.SIGKILL) == "worker process 1234 killed by SIGKILL"
    assert describe_death(7, 3) == "worker process 7 exited with code 3"
    assert describe_death(7, -200) == "worker process 7 killed by signal 200"
    text = "x worker process 11 started\ny worker process 12 started (again)\n"
    assert started_pids(text) == [11, 12]


# --- real processes, a stand-in child --------------------------------------------


def test_a_crashed_child_is_restarted_as_a_new_process_with_growing_waits(
    stand_ins: Callable[..., StandIn],
) -> None:
    s = stand_ins(crashes=2)
    wait_until(lambda: len(s.pids()) == 3, 20, lambda: f"three starts: {s.text()}")
    first, second, third = s.pids()
    assert len({first, second, third}) == 3
    text = s.text()
    assert f"worker process {first} killed by SIGSEGV" in text
    assert f"worker process {second} killed by SIGSEGV" in text
    assert "restarting in 0.05 s (restart 1)" in text
    assert "restarting in 0.1 s (restart 2)" in text
    assert s.proc.poll() is None and not gone(third)
    s.proc.terminate()
    assert s.proc.wait(15) == 0
    assert gone(third)


def test_a_child_exiting_non_zero_is_restarted_and_one_exiting_zero_is_not(
    stand_ins: Callable[..., StandIn], tmp_path: Path
) -> None:
    failing = stand_ins(mode="exit3")
    wait_until(lambda: len(failing.pids()) >= 3, 20, lambda: f"restarts: {failing.text()}")
    assert "exited with code 3" in failing.text()
    failing.close()

    (tmp_path / "count").unlink()
    clean = stand_ins(mode="exit0")
    assert clean.proc.wait(15) == 0
    assert len(clean.pids()) == 1
    assert "exited cleanly; not restarting" in clean.text()


def test_sigterm_to_the_supervisor_stops_its_child_and_both_exit_0(
    stand_ins: Callable[..., StandIn],
) -> None:
    s = stand_ins()
    wait_until(lambda: len(s.pids()) == 1, 15, s.text)
    (child,) = s.pids()
    time.sleep(0.5)  # let the child install its handler
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    assert gone(child)
    assert s.marker.read_text() == str(child)  # the child was asked, not killed
    assert "killed by" not in s.text()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    stand_ins: Callable[..., StandIn],
) -> None:
    s = stand_ins(mode="stubborn", grace_s=1.0)
    wait_until(lambda: len(s.pids()) == 1, 15, s.text)
    (child,) = s.pids()
    time.sleep(0.5)
    began = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    assert 1.0 <= time.monotonic() - began < 10
    assert gone(child) and s.marker.exists()
    assert "still running" in s.text() and "killing it" in s.text()


def test_a_sigkilled_supervisor_takes_its_child_along(stand_ins: Callable[..., StandIn]) -> None:
    s = stand_ins()
    wait_until(lambda: len(s.pids()) == 1, 15, s.text)
    (child,) = s.pids()
    s.proc.kill()  # the supervisor alone, not its process group
    s.proc.wait(10)
    wait_until(lambda: gone(child), 10, lambda: "the orphaned child is still running")


# --- a real worker against the broker --------------------------------------------


def worker_env(tmp: Path) -> dict[str, str]:
    return fresh_env(tmp, THUNDERHELM_SESSION_TIMEOUT_S="6", OTEL_TRACES_EXPORTER="none")


def big(run_id: str) -> dict[str, Any]:
    """A run whose every generation trains for a second or two on a pool of 2."""
    run = request(run_id, epochs=40)
    run["ga"]["population"] = 8
    run["search_space"] = {"max_levels": 3, "max_units": 2, "max_neurons": 256}
    return run


def source_pid(record_value: bytes) -> int:
    return int(decode_record(record_value, {}).source.rsplit("/", 1)[-1])


@pytest.mark.kafka
@pytest.mark.slow
def test_a_sigsegv_in_the_pool_process_restarts_the_worker_and_its_run_ends_as_its_twin(
    tmp_path: Path,
) -> None:
    worker = WorkerProcess(worker_env(tmp_path), tmp_path / "worker.log")
    worker.start()
    try:
        text = worker.log_path.read_text
        (victim,) = started_pids(text())
        assert worker.proc is not None and victim != worker.proc.pid
        run = big(f"segv-{uuid.uuid4().hex[:6]}")
        start(worker, run)
        launched = f"run {run['run_id']}: launching generation 2"
        wait_until(lambda: launched in text(), 120, lambda: f"never launched: {text()[-3000:]}")
        time.sleep(0.3)  # into the candidates' training
        os.kill(victim, signal.SIGSEGV)

        def back() -> bool:
            assert worker.alive(), f"the supervisor exited: {text()[-3000:]}"
            pids = started_pids(text())
            return len(pids) == 2 and "Ready" in text().split(f"process {pids[1]} started")[1]

        wait_until(back, 120, lambda: f"no new worker: {text()[-3000:]}")
        successor = started_pids(text())[1]
        assert successor != victim and worker.alive()
        assert f"worker process {victim} killed by SIGSEGV" in text()
        assert "(restart 1)" in text()

        twin = big(f"twin-{uuid.uuid4().hex[:6]}")
        after = request(f"after-{uuid.uuid4().hex[:6]}", generations=1, epochs=2)
        start(worker, twin)
        start(worker, after)
        ids = [run["run_id"], twin["run_id"], after["run_id"]]
        records = wait_for(worker, ids, timeout_s=300)
    finally:
        worker.stop()
    log = events(records, worker, run["run_id"])
    assert violations(log) == [], [e.type for e in log]
    assert [e.type for e in log].count(ev.RUN_STARTED) == 1  # resumed, not restarted
    writers = [
        source_pid(r.value)
        for r in of(records, worker.settings.run_events, run["run_id"])
        if decode_record(r.value, {}).type == ev.GENERATION_COMPLETED
    ]
    # Generations 0 and 1 by the crashed process; 2, struck while it trained, and 3
    # by its successor.
    assert writers == [victim, victim, successor, successor], writers
    (resumed,) = results(records, worker, run["run_id"])
    (uninterrupted,) = results(records, worker, twin["run_id"])
    assert resumed["status"] == uninterrupted["status"] == "succeeded"
    assert resumed["best"]["genome"] == uninterrupted["best"]["genome"]
    assert resumed["best"]["fitness"] == uninterrupted["best"]["fitness"]
    (later,) = results(records, worker, after["run_id"])
    assert later["status"] == "succeeded"


@pytest.mark.kafka
@pytest.mark.slow
def test_sigterm_to_a_supervised_worker_stops_both_processes_with_exit_0(tmp_path: Path) -> None:
    worker = WorkerProcess(worker_env(tmp_path), tmp_path / "worker.log")
    worker.start()
    proc = worker.proc
    assert proc is not None
    try:
        (child,) = started_pids(worker.log_path.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
        assert gone(child)
        text = worker.log_path.read_text()
        assert f"sending SIGTERM to worker process {child}" in text
        assert f"worker process {child} exited with code 0" in text
    finally:
        worker.stop(kill=True)


def test_the_supervisor_process_imports_nothing_heavy() -> None:
    # What `thunderhelm worker` has loaded when it hands over to the supervisor.
    probe = (
        "import sys, thunderhelm.streams.cli.main, thunderhelm.streams.worker.supervisor; "
        "print(sorted(m for m in ('faust', 'numpy', 'thunderhelm.ga.pool') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
