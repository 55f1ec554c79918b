"""Shared tools of the operators' page tests: a free port, a page config, HTTP GETs."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
from pathlib import Path

SYNTHETIC = ('type = "synthetic"\nwidth = 320\nheight = 240\nrate_fps = 20\nseed = 5\n'
             'fraction_um = [20.0, 40.0]\n')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_section(port: int, *, host: str = "127.0.0.1", token_file: str | None = None) -> str:
    token = f'token_file = "{token_file}"\n' if token_file else ""
    return (f'\n[web]\nenabled = true\nhost = "{host}"\nport = {port}\nrefresh_s = 1.0\n'
            f"frame_interval_s = 0.2\n{token}")


def http(url: str, *, method: str = "GET", bearer: str | None = None,
         basic: tuple[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, method=method)
    if bearer is not None:
        req.add_header("Authorization", f"Bearer {bearer}")
    if basic is not None:
        cred = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {cred}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def write_token(path: Path, token: str = "s3cret-token-42") -> str:
    path.write_text(token + "\n")
    return token
