"""The test and benchmark harness's worker leaves no process behind when it never gets ready."""

import os
from pathlib import Path

import pytest

from tests.kafka_helpers import WorkerProcess, fresh_env

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


def processes_with(marker: str) -> list[int]:
    """Pids of this machine's processes whose environment holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if marker.encode() in environ.split(b"\0"):
            found.append(int(name))
    return found


def test_a_worker_that_never_gets_ready_is_killed_with_its_supervisor(tmp_path: Path) -> None:
    env = fresh_env(tmp_path, THUNDERHELM_BOOTSTRAP_SERVERS=NOWHERE, OTEL_TRACES_EXPORTER="none")
    marker = f"THUNDERHELM_APP_ID={env['THUNDERHELM_APP_ID']}"
    worker = WorkerProcess(env, tmp_path / "worker.log")
    with pytest.raises(TimeoutError, match="worker not ready"):
        worker.start(ready_timeout=6.0)
    # Neither the supervisor nor a worker it started is left to load the next tests.
    assert processes_with(marker) == [], (tmp_path / "worker.log").read_text()[-2000:]
    assert worker.proc is None and not worker.alive()
