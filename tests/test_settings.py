"""Where the worker writes by default, and the settings the container needs."""

from __future__ import annotations

from pathlib import Path

import thunderhelm
from thunderhelm.streams.worker.settings import Settings

INSTALLED = Path(thunderhelm.__file__).resolve().parent


def test_state_defaults_to_the_users_own_folder() -> None:
    s = Settings.from_env({"HOME": "/home/ada"})
    assert s.artifact_dir == Path("/home/ada/.local/state/thunderhelm/artifacts")
    assert s.data_root == Path("/home/ada/.local/state/thunderhelm/data")
    for path in (s.artifact_dir, s.data_root):
        assert not path.is_relative_to(INSTALLED)


def test_state_folder_is_configurable() -> None:
    xdg = Settings.from_env({"HOME": "/home/ada", "XDG_STATE_HOME": "/srv/state"})
    assert xdg.artifact_dir == Path("/srv/state/thunderhelm/artifacts")
    own = Settings.from_env({"XDG_STATE_HOME": "/srv/state", "THUNDERHELM_STATE_DIR": "/v"})
    assert (own.artifact_dir, own.data_root) == (Path("/v/artifacts"), Path("/v/data"))
    explicit = Settings.from_env({"THUNDERHELM_STATE_DIR": "/v", "THUNDERHELM_ARTIFACT_DIR": "/a"})
    assert explicit.artifact_dir == Path("/a") and explicit.data_root == Path("/v/data")


def test_web_server_binds_loopback_unless_told() -> None:
    assert Settings.from_env({}).web_host == "127.0.0.1"
    assert Settings.from_env({"THUNDERHELM_WEB_HOST": "0.0.0.0"}).web_host == "0.0.0.0"
