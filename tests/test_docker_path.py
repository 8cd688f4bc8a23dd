"""The Docker path, checked without a Docker engine.

The image is emulated step by step: the wheel is built (with build
isolation, as `pip wheel .` in the Dockerfile) from exactly the files
.dockerignore lets into the build context, installed into a fresh venv, and
the worker is run as `nobody` with the compose file's environment and
command, against the local Kafka and Jaeger (compose's hostnames mapped to
loopback, its mounts to temporary folders). A run must finish with its
artifact in the folder standing in for the worker-state volume, and the
compose healthcheck command must pass against that worker.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dockerignore import context_files, copy_context
from tests.kafka_helpers import BOOTSTRAP, collect, free_port
from tests.test_compose import load_compose, mount_point
from tests.test_e2e_kafka import for_run, produce, small_request, structured
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
# The interpreter of this checkout's venv may live in a folder only root can
# read (/root/.pyenv); the worker keeps the one right to read and search
# folders, never to write where it does not own.
AS_NOBODY = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]
HOSTS = {"kafka:9092": BOOTSTRAP, "http://jaeger:4318": "http://127.0.0.1:4318"}


def test_build_context_holds_what_the_wheel_needs() -> None:
    files = set(context_files(ROOT))
    assert {"pyproject.toml", "setup.py", "README.md", "ga/training/_kernel.pyx"} <= files
    for layer in ("streams", "ga", "schemas"):
        inits = {p.relative_to(ROOT).as_posix() for p in (ROOT / layer).rglob("__init__.py")}
        assert inits <= files, inits - files
    assert not {f for f in files if f.split("/")[0] in {"bench", "tests", ".venv", "var"}}


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    """A folder others can read, holding the built wheel and a fresh venv with it."""
    top = Path(tempfile.mkdtemp(prefix="thunderhelm-image-"))
    top.chmod(0o755)
    try:
        copy_context(ROOT, top / "context")
        wheels = top / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, "."],
            cwd=top / "context",
            check=True,
        )
        (wheel,) = wheels.glob("thunderhelm-*.whl")
        subprocess.run([sys.executable, "-m", "venv", top / "venv"], check=True)
        pip = [top / "venv/bin/python", "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--disable-pip-version-check", wheel], check=True)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _compose_env(mounts: dict[str, Path]) -> dict[str, str]:
    """The worker's compose environment, with hosts and mount points mapped here."""
    env: dict[str, str] = {}
    for name, value in load_compose()["services"]["worker"]["environment"].items():
        text = str(value)
        for host, local in HOSTS.items():
            text = text.replace(host, local)
        for inside, outside in mounts.items():
            if text == inside or text.startswith(inside + "/"):
                text = str(outside) + text[len(inside) :]
        env[name] = text
    return env


def _listening_on_all_addresses(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port and set(address) == {"0"}:
                return True
    return False


@pytest.mark.kafka
@pytest.mark.slow
async def test_the_image_runs_a_run_as_an_unprivileged_user(image: Path) -> None:
    worker_service = load_compose()["services"]["worker"]
    mounts: dict[str, Path] = {}
    for volume in worker_service["volumes"]:
        inside = mount_point(volume)
        mounts[inside] = image / "mounts" / inside.strip("/").replace("/", "_")
        mounts[inside].mkdir(parents=True)
    home = image / "home"  # the image's WORKDIR, the user's own home
    for folder in [home, *mounts.values()]:
        folder.mkdir(exist_ok=True)
        os.chown(folder, NOBODY, NOBODY)
    state_volume = mounts["/var/lib/thunderhelm"]

    tag = uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        "PATH": f"{image / 'venv/bin'}:/usr/bin:/bin",
        "HOME": str(home),
        **_compose_env(mounts),
        # Isolation from the other users of the shared broker, and a free port.
        "THUNDERHELM_TOPIC_PREFIX": f"test-docker-{tag}.",
        "THUNDERHELM_APP_ID": f"thunderhelm-docker-{tag}",
        "THUNDERHELM_WEB_PORT": str(port),
        "THUNDERHELM_PARTITIONS": "2",
        "THUNDERHELM_POOL_SIZE": "2",
    }
    site = subprocess.run(
        [
            *AS_NOBODY,
            "python",
            "-c",
            "import thunderhelm, os; print(os.path.dirname(thunderhelm.__file__))",
        ],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert site.startswith(str(image / "venv")), site  # the installed wheel, not the checkout
    probe = subprocess.run([*AS_NOBODY, "touch", f"{site}/probe"], env=env, cwd=home, check=False)
    assert probe.returncode != 0, "the install location must not be writable by the user"

    log = (image / "worker.log").open("wb")
    worker = subprocess.Popen(
        [*AS_NOBODY, *shlex.split(worker_service["command"])],
        env=env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        check = worker_service["healthcheck"]["test"]
        assert check[0] == "CMD"
        deadline = time.monotonic() + 150
        while (
            subprocess.run(
                [*AS_NOBODY, *check[1:]], env=env, cwd=home, check=False, capture_output=True
            ).returncode
            != 0
        ):
            assert worker.poll() is None, (image / "worker.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (image / "worker.log").read_text()[-4000:]
            time.sleep(1)
        assert _listening_on_all_addresses(port), "the web port must be reachable from outside"

        settings = Settings.from_env(env)
        run_id = f"docker-{tag}"
        request = small_request(run_id, generations=1, samples=150)
        await produce(settings.run_requests, structured(request), run_id.encode())
        records = await collect(
            [settings.run_results],
            lambda seen: bool(for_run(seen, run_id, settings.run_results)),
            timeout_s=240.0,
            alive=lambda: worker.poll() is None,
        )
        (record,) = for_run(records, run_id, settings.run_results)
        result = decode_record(record.value, {}).data
        assert result["status"] == "succeeded", json.dumps(result)[:2000]
        artifact = Path(result["artifact"])
        assert artifact.is_relative_to(state_volume), artifact
        assert artifact.is_file() and artifact.stat().st_uid == NOBODY
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
