"""The dashboard's own knobs, from the environment (the worker's Settings hold the rest)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 6070
    # Jaeger's own UI, only where it is really served (the Docker image);
    # the Go-built local Jaeger has the API but no UI, so no link by default.
    jaeger_ui_link: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DashboardSettings:
        env = dict(os.environ if environ is None else environ)
        link = env.get("THUNDERHELM_JAEGER_UI_LINK", "").strip().rstrip("/")
        return cls(
            host=env.get("THUNDERHELM_DASHBOARD_HOST", cls.host),
            port=int(env.get("THUNDERHELM_DASHBOARD_PORT", cls.port)),
            jaeger_ui_link=link or None,
        )
