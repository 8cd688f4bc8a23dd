"""Process, port and tool plumbing of the local services.

How a process is started detached, recognised as ours (pid file plus command
line), stopped, waited for; how a busy port is reported with its owner; how
Java, Maven and Go are found.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOG_ROTATE_BYTES = 20 * 1024 * 1024


class ServicesError(RuntimeError):
    """A service cannot be provisioned, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- processes


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaping it if it is our child)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:
        _reap(pid)  # it may have died between the first reap and the read
        return False
    return True


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _matches(pid: int, markers: Sequence[str]) -> bool:
    args = cmdline(pid)
    return bool(args) and all(m in args for m in markers)


def find_own_pid(pid_file: Path, markers: Sequence[str]) -> int | None:
    """The pid of our process: from the pid file if its command line carries ``markers``.

    Falls back to scanning /proc for a process with those markers (pid file lost),
    and removes a stale pid file.
    """
    pid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
    if pid is not None and is_alive(pid) and _matches(pid, markers):
        return pid
    pid_file.unlink(missing_ok=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            other = int(entry.name)
            if other != os.getpid() and _matches(other, markers) and is_alive(other):
                pid_file.parent.mkdir(parents=True, exist_ok=True)
                pid_file.write_text(f"{other}\n")
                return other
    return None


def rotate_log(log_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_file.stat().st_size > LOG_ROTATE_BYTES:
            log_file.replace(log_file.with_name(log_file.name + ".1"))


def spawn_detached(argv: Sequence[str], log_file: Path, env: Mapping[str, str]) -> int:
    """Start ``argv`` in its own session; stdin /dev/null, stdout and stderr appended to the log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log_file)
    with open(log_file, "a") as fh:
        fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n")
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions, setsid=True)


def terminate(pid: int, grace_s: float) -> None:
    """SIGTERM the process (and its session group), SIGKILL it after ``grace_s``."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def log_tail(log_file: Path, lines: int = 25) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(
    name: str,
    pid: int,
    ready: Callable[[], bool],
    *,
    address: str,
    log: Path,
    timeout_s: float,
    poll_s: float,
) -> None:
    """Return once `ready()` holds; raise with the log's tail if the process dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise ServicesError(
                f"{name} exited during start-up; last lines of {log}:\n{log_tail(log)}"
            )
        if ready():
            return
        time.sleep(poll_s)
    raise ServicesError(
        f"{name} (pid {pid}) did not answer on {address} within {timeout_s:.0f}s; "
        f"see {log}:\n{log_tail(log)}"
    )


# --------------------------------------------------------------------------- ports


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (or otherwise holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def accepts_connections(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def port_owner(port: int) -> str:
    """Best-effort description of the process listening on ``port``."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if targets:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    if os.readlink(fd) in targets:
                        args = " ".join(cmdline(int(proc.name)))
                        return f"pid {proc.name}: {args[:160]}"
    return "owner unknown (another user's process, or not listening yet)"


def require_free_ports(service: str, host: str, ports: Sequence[int]) -> None:
    busy = [p for p in ports if port_in_use(host, p)]
    if busy:
        owners = "; ".join(f"{host}:{p} held by {port_owner(p)}" for p in busy)
        raise ServicesError(
            f"cannot start {service}: port(s) already in use by a process that "
            f"`thunderhelm services` did not start ({owners}). Stop that process, or "
            f"choose other ports with the THUNDERHELM_*_PORT variables."
        )


def wait_ports_free(host: str, ports: Sequence[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if not any(port_in_use(host, p) for p in ports):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


# --------------------------------------------------------------------------- tools


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def find_tool(name: str, purpose: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServicesError(f"`{name}` is not on PATH; it is needed to {purpose}. {install}")
    return path


def _tool_output(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServicesError(f"could not run `{' '.join(argv)}`: {exc}") from exc
    return done.stdout + done.stderr


JAVA_INSTALL = (
    "Install a Java 17+ runtime (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`), or set JAVA_HOME to one."
)


def require_java(minimum: int = 17) -> str:
    """Path of a ``java`` of at least version ``minimum`` (JAVA_HOME first, then PATH)."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is not None and os.access(candidate, os.X_OK):
        java = str(candidate)
    else:
        java = find_tool("java", "run the Kafka broker", JAVA_INSTALL)
    out = _tool_output([java, "-version"])
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if found is None:
        raise ServicesError(f"cannot tell the version of {java} (`java -version` said: {out!r})")
    major = int(found.group(1))
    if major == 1 and found.group(2):
        major = int(found.group(2))
    if major < minimum:
        raise ServicesError(
            f"Kafka needs Java {minimum} or newer, but {java} is Java {major}. {JAVA_INSTALL}"
        )
    return java


def require_mvn() -> str:
    install = (
        "Install Apache Maven 3.6.3+ (Debian/Ubuntu: `apt-get install maven`; "
        "macOS: `brew install maven`); it downloads the Kafka jars once."
    )
    mvn = find_tool("mvn", "download the Kafka jars from Maven Central", install)
    found = re.search(r"Apache Maven (\d+\.\d+\.\d+)", _tool_output([mvn, "-v"]))
    if found and _version_tuple(found.group(1)) < (3, 6, 3):
        raise ServicesError(f"Maven {found.group(1)} is too old. {install}")
    return mvn


def require_go(minimum: str) -> str:
    install = (
        f"Install Go {minimum} or newer (https://go.dev/dl/, or `brew install go`); "
        "it builds Jaeger once."
    )
    go = find_tool("go", "build Jaeger", install)
    found = re.search(r"go(\d+\.\d+(?:\.\d+)?)", _tool_output([go, "version"]))
    if found and _version_tuple(found.group(1)) < _version_tuple(minimum):
        raise ServicesError(f"Go {found.group(1)} is too old to build Jaeger. {install}")
    return go


def service_env() -> dict[str, str]:
    """The environment for spawned services (no Python-specific variables leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
