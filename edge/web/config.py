"""The ``[web]`` section: the read-only operators' page (:mod:`edge.web`). Off by default.

Bound to loopback it may run without credentials (the device's own browser, an SSH
tunnel). Any other address needs ``token_file``: without it the configuration is refused
(exit 2), because the page shows the process's frames to whoever reaches the port.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["WebConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    """``host`` is ``localhost`` or an address in ``127.0.0.0/8`` / ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(BaseModel):
    """``[web]``: the read-only operators' page (latest frame, PSD, trends, health)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve the operators' page (off by default)")
    host: str = Field(
        "127.0.0.1",
        description="address to bind; anything but loopback (127.0.0.0/8, ::1, localhost) "
                    "needs token_file. Put TLS in front with a reverse proxy (docs/web.md)")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port)")
    token_file: Path | None = Field(
        None,
        description="file holding the access token (first line): sent as 'Authorization: "
                    "Bearer TOKEN', as ?token=TOKEN, or as the HTTP Basic password (any user "
                    "name); unset = no authentication (loopback only)")
    refresh_s: float = Field(
        2.0, ge=1.0, le=3600.0,
        description="seconds between the page's refreshes of status, frame and charts")
    frame_interval_s: float = Field(
        1.0, ge=0.2, le=3600.0,
        description="the latest-frame overlay is encoded at most once per this many seconds "
                    "(and only when a client asks for it); requests in between get the "
                    "cached image")
    trend_hours: float = Field(
        6.0, gt=0, le=24 * 365,
        description="hours of batch history the page's trend charts show")
    max_batches: int = Field(
        2000, ge=1, le=100_000,
        description="most batches one /api/batches request returns (the limit parameter "
                    "is capped here)")
    rejected_thumbnails: int = Field(
        4, ge=0, le=32, description="last rejected frames kept per reason for thumbnails")
    max_connections: int = Field(
        16, ge=1, le=256,
        description="concurrent connections served; further requests get 503")

    @model_validator(mode="after")
    def _credentials_off_loopback(self) -> WebConfig:
        if self.enabled and not is_loopback(self.host) and self.token_file is None:
            raise ValueError(
                f"[web] host {self.host!r} is not loopback and [web] token_file is not set: "
                "the page would be open to the network without credentials; set token_file "
                "or bind 127.0.0.1 behind a reverse proxy")
        return self
