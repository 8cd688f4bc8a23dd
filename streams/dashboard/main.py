"""`thunderhelm dashboard`: settings from the environment and flags, then serve."""

from __future__ import annotations

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.dashboard.server import serve
from thunderhelm.streams.dashboard.settings import DashboardSettings
from thunderhelm.streams.observability import telemetry


def main(settings: Settings, host: str | None, port: int | None) -> int:
    dash = DashboardSettings.from_env()
    dash = dash.model_copy(
        update={"host": host or dash.host, "port": dash.port if port is None else port}
    )
    # A cancel from the page is a command like the CLI's: traced under the CLI's name.
    telemetry.configure(settings.model_copy(update={"service_name": "thunderhelm-dashboard"}))
    try:
        return serve(settings, dash)
    finally:
        telemetry.shutdown()
