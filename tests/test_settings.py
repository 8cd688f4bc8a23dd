"""Where the worker writes by default, and the settings the container needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import thunderhelm
from thunderhelm.streams.config.settings import Settings, SettingsError
from thunderhelm.streams.dashboard.settings import DashboardSettings

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
    ("name", "value", "message"),
    [
        ("THUNDERHELM_PARTITIONS", "four", "must be an integer from 1 to 10000, got 'four'"),
        ("THUNDERHELM_PARTITIONS", "0", "must be an integer from 1 to 10000, got '0'"),
        ("THUNDERHELM_WEB_PORT", "70000", "must be an integer from 0 to 65535, got '70000'"),
        ("THUNDERHELM_POOL_SIZE", "x", "must be an integer from 0 to 4096, got 'x'"),
        ("THUNDERHELM_POOL_SIZE", "-1", "must be an integer from 0 to 4096, got '-1'"),
        ("THUNDERHELM_SESSION_TIMEOUT_S", "nan", "must be a finite number > 0 and <= 3600"),
        ("THUNDERHELM_METRICS", "maybe", "must be true or false, got 'maybe'"),
        ("THUNDERHELM_LOG_FORMAT", "xml", "must be one of 'text' or 'json', got 'xml'"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}: {message}")


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"THUNDERHELM_PARTITIONS": "x", "THUNDERHELM_WEB_PORT": "-5"})
    said = str(caught.value)
    assert "THUNDERHELM_PARTITIONS: " in said and "THUNDERHELM_WEB_PORT: " in said


def test_a_bad_limit_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="THUNDERHELM_LIMIT_MAX_POPULATION"):
        Settings.from_env({"THUNDERHELM_LIMIT_MAX_POPULATION": "many"})


def test_opentelemetry_variables_and_new_knobs() -> None:
    s = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/",
            "OTEL_SERVICE_NAME": "w2",
            "OTEL_TRACES_EXPORTER": "none",
            "THUNDERHELM_METRICS": "false",
            "THUNDERHELM_LOG_FORMAT": "json",
        }
    )
    assert (s.otlp_endpoint, s.service_name, s.tracing) == ("http://jaeger:4318", "w2", False)
    assert (s.metrics, s.log_format) == (False, "json")
    traces = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t",
    }
    assert Settings.from_env(traces).otlp_endpoint == "http://t"
    defaults = Settings.from_env({})
    assert (defaults.metrics, defaults.log_format, defaults.tracing) == (True, "text", True)


def test_empty_variables_count_as_unset() -> None:
    s = Settings.from_env({"THUNDERHELM_PARTITIONS": "", "THUNDERHELM_DATA_ROOT": "", "HOME": "/h"})
    assert s.partitions == 4 and s.data_root == Path("/h/.local/state/thunderhelm/data")


def test_keyword_arguments_and_copies_keep_working() -> None:
    s = Settings(topic_prefix="unit.", service_name="svc")
    assert (s.run_requests, s.service_name) == ("unit.run-requests", "svc")
    copy = s.model_copy(update={"pool_size": 3})
    assert copy.pool_size == 3 and copy.topic_prefix == "unit."
    with pytest.raises(ValidationError):
        Settings(partitions=0)


def test_dashboard_settings_read_their_variables_and_name_a_bad_one() -> None:
    dash = DashboardSettings.from_env(
        {"THUNDERHELM_DASHBOARD_PORT": "7000", "THUNDERHELM_JAEGER_UI_LINK": "http://j:16686/"}
    )
    assert (dash.host, dash.port, dash.jaeger_ui_link) == ("127.0.0.1", 7000, "http://j:16686")
    with pytest.raises(SettingsError) as caught:
        DashboardSettings.from_env({"THUNDERHELM_DASHBOARD_PORT": "web"})
    assert str(caught.value) == (
        "THUNDERHELM_DASHBOARD_PORT: must be an integer from 0 to 65535, got 'web'"
    )


def test_the_worker_exits_with_one_line_on_a_bad_setting() -> None:
    env = {**os.environ, "THUNDERHELM_POOL_SIZE": "x"}
    done = subprocess.run(
        [sys.executable, "-m", "thunderhelm.streams.cli.main", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "thunderhelm worker: THUNDERHELM_POOL_SIZE: must be an integer from 0 to 4096, got 'x'"
    ]


def test_numbers_are_read_from_their_variables() -> None:
    s = Settings.from_env({"THUNDERHELM_PARTITIONS": " 3 ", "THUNDERHELM_SESSION_TIMEOUT_S": "2.5"})
    assert (s.partitions, s.session_timeout_s) == (3, 2.5)
