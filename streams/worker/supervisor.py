"""Keeps a worker serving after its process dies: a small parent that restarts it.

A native crash in the pool (SIGSEGV, the OOM killer) takes the whole worker
process with it, and nothing inside a dead process can bring it back. So
`thunderhelm worker` runs this supervisor, which starts the real worker as a
child (`thunderhelm worker --no-supervise`) and starts a new one whenever it
dies, waiting a little longer after each quick death. The runs the dead child
held resume in its successor from their last completed generation, as they
would on any other worker of the group.

The supervisor imports nothing heavy (no Faust, numpy or pool): it has to stay
small and healthy while its child is the one that fails. It logs one line per
child start (``worker process PID started``, which is how tests and benchmarks
find the process that holds the pool) and one per death, naming the signal or
exit code. SIGTERM or SIGINT stops it: the child gets SIGTERM, is killed if it
has not gone after a grace period, and the supervisor exits 0. A child that
exits 0 by itself has shut down cleanly and is not restarted. The child is
asked to die with the supervisor (Linux ``PR_SET_PDEATHSIG``), so a SIGKILL
of the supervisor leaves no orphan worker behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

__all__ = [
    "Backoff",
    "Supervisor",
    "describe_death",
    "started_pids",
    "worker_command",
]

log = logging.getLogger("thunderhelm.supervisor")

# The same shape as Faust's lines, so a worker's log reads as one stream.
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] supervisor: %(message)s"
STARTED = re.compile(r"worker process (\d+) started")
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.1


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each restart of a child that keeps dying.

    The wait doubles from `first_s` up to `cap_s` over a streak of deaths; a
    child that stayed up `reset_after_s` or longer was healthy, so its death
    starts a new streak at `first_s`.
    """

    first_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, streak: int) -> float:
        """Seconds to wait before restart `streak` of a streak (1 is the first)."""
        # Capped exponent: a child failing for days must not overflow the float.
        exponent = min(max(streak - 1, 0), 64)
        return min(self.cap_s, self.first_s * self.factor**exponent)

    def next_streak(self, streak: int, uptime_s: float) -> int:
        """The streak after a death of a child that had been up `uptime_s`."""
        return 1 if uptime_s >= self.reset_after_s else streak + 1


def describe_death(pid: int, returncode: int) -> str:
    """``worker process PID killed by SIGSEGV`` or ``... exited with code N``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"worker process {pid} killed by {name}"
    return f"worker process {pid} exited with code {returncode}"


def started_pids(log_text: str) -> list[int]:
    """PIDs of the worker processes a supervisor's log says it started, in order."""
    return [int(m[1]) for m in STARTED.finditer(log_text)]


def worker_command() -> list[str]:
    """The unsupervised worker, run by the same interpreter as this process."""
    return [sys.executable, "-m", "thunderhelm.streams.cli.main", "worker", "--no-supervise"]


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGKILL the child when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal comes.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class Supervisor:
    """Runs `command` as a child, restarting it with `backoff` until told to stop."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        backoff: Backoff | None = None,
        grace_s: float = 25.0,
    ) -> None:
        self.command = list(command)
        self.backoff = backoff or Backoff()
        # Under the 30 s a caller such as devservices.worker_process waits before killing us.
        self.grace_s = grace_s
        self.restarts = 0
        self._stop_signal: str | None = None
        self._hurry = False

    def run(self) -> int:
        """Supervise until a stop signal or a clean child exit; the exit status (0)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        streak = 0
        while self._stop_signal is None:
            child = subprocess.Popen(self.command, preexec_fn=_die_with_parent())
            log.info("worker process %d started", child.pid)
            began = time.monotonic()
            code = self._wait(child)
            uptime = time.monotonic() - began
            if self._stop_signal is not None:
                log.info("%s; supervisor stopped", describe_death(child.pid, code))
                return 0
            if code == 0:
                log.info("worker process %d exited cleanly; not restarting", child.pid)
                return 0
            streak = self.backoff.next_streak(streak, uptime)
            self.restarts += 1
            delay = self.backoff.delay(streak)
            log.warning(
                "%s after %.1f s; restarting in %.3g s (restart %d)",
                describe_death(child.pid, code),
                uptime,
                delay,
                self.restarts,
            )
            self._sleep(delay)
        log.info("got %s; stopped", self._stop_signal)
        return 0

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        # Polling rather than a blocking wait: the signal handler only sets
        # flags, and the forwarding and the grace deadline happen here.
        termed_at: float | None = None
        killed = False
        while (code := child.poll()) is None:
            if self._stop_signal is not None and termed_at is None:
                log.info(
                    "got %s; sending SIGTERM to worker process %d",
                    self._stop_signal,
                    child.pid,
                )
                child.send_signal(signal.SIGTERM)
                termed_at = time.monotonic()
            if termed_at is not None and not killed:
                waited = time.monotonic() - termed_at
                if self._hurry or waited >= self.grace_s:
                    log.warning(
                        "worker process %d still running %.1f s after SIGTERM; killing it",
                        child.pid,
                        waited,
                    )
                    child.kill()
                    killed = True
            time.sleep(_POLL_S)
        return code

    def _sleep(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while self._stop_signal is None and time.monotonic() < until:
            time.sleep(_POLL_S)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags: logging or signalling from a handler could deadlock on a
        # lock the interrupted code holds.
        if self._stop_signal is not None:
            self._hurry = True  # a second signal: do not wait out the grace period
            return
        self._stop_signal = signal.Signals(signum).name


def main(command: Sequence[str] | None = None) -> int:
    """`thunderhelm worker`: supervise the real worker; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if command is None:
        # A bad setting would end every child at start-up, restarted forever:
        # say which variable is wrong, once, and stop.
        from thunderhelm.streams.config.settings import Settings, SettingsError

        try:
            Settings.from_env()
        except SettingsError as exc:
            print(f"thunderhelm worker: {exc}", file=sys.stderr, flush=True)
            return 2
    return Supervisor(worker_command() if command is None else command).run()
