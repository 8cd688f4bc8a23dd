"""Where the worker writes by default, and the settings the container needs."""

from __future__ import annotations

from pathlib import Path

import pytest

import thunderhelm
from thunderhelm.streams.worker.settings import Settings, SettingsError

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


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("THUNDERHELM_PARTITIONS", "four", "valid integer"),
        ("THUNDERHELM_PARTITIONS", "0", "greater than or equal to 1"),
        ("THUNDERHELM_WEB_PORT", "70000", "less than or equal to 65535"),
        ("THUNDERHELM_POOL_SIZE", "-1", "greater than or equal to 0"),
        ("THUNDERHELM_SESSION_TIMEOUT_S", "nan", "finite"),
    ],
)
def test_a_bad_number_is_refused_naming_its_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}={value!r}: ") and says in str(caught.value)


def test_numbers_are_read_from_their_variables() -> None:
    s = Settings.from_env({"THUNDERHELM_PARTITIONS": " 3 ", "THUNDERHELM_SESSION_TIMEOUT_S": "2.5"})
    assert (s.partitions, s.session_timeout_s) == (3, 2.5)
