"""Access rules of the page, as one ASGI middleware: read-only and, with a token, closed.

* Only ``GET`` and ``HEAD``: any other method is answered ``405`` (``Allow: GET, HEAD``)
  before anything else, so no request can change anything.
* With a token (``[web] token_file``) every request must carry it, as
  ``Authorization: Bearer TOKEN``, as the query parameter ``token``, or as the HTTP Basic
  password (any user name: a browser asks for it). Tokens are compared with
  :func:`hmac.compare_digest` (constant time). Anything else is ``401`` with a
  ``WWW-Authenticate: Basic`` challenge.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from edge.errors import UserError

__all__ = ["ReadOnlyAuth", "read_token"]

Scope = dict[str, Any]


def read_token(path: str | Path) -> str:
    """The token: the first line of ``path`` (a UserError naming ``[web] token_file``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"[web] token_file {path}: cannot read it: "
                        f"{exc.strerror or exc}") from None
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 8:
        raise UserError(f"[web] token_file {path}: the first line must hold a token of at "
                        "least 8 characters")
    return token


def _offered(scope: Scope) -> list[str]:
    """Credentials a request offers: Bearer token, Basic password, ?token=."""
    out: list[str] = []
    for name, value in scope.get("headers", ()):
        if name != b"authorization":
            continue
        kind, _, cred = value.decode("latin-1").partition(" ")
        if kind.lower() == "bearer":
            out.append(cred.strip())
        elif kind.lower() == "basic":
            try:
                user_pass = base64.b64decode(cred.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
            out.append(user_pass.partition(":")[2])
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    out += query.get("token", [])
    return out


async def _plain(send: Any, status: int, text: str, headers: list[tuple[bytes, bytes]]
                 ) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class ReadOnlyAuth:
    """ASGI middleware enforcing the rules of the module docstring.

    Parameters
    ----------
    app
        The ASGI application behind it.
    token : str, optional
        The access token; None = no authentication (loopback only).
    """

    def __init__(self, app: Any, *, token: str | None = None) -> None:
        self.app = app
        self._token = None if token is None else token.encode("utf-8")

    def allowed(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        ok = False
        for cred in _offered(scope):
            # every offer is compared in full: the time does not depend on which matched
            ok |= hmac.compare_digest(cred.encode("utf-8"), self._token)
        return ok

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, "read-only: GET and HEAD only\n",
                         [(b"allow", b"GET, HEAD")])
            return
        if not self.allowed(scope):
            await _plain(send, 401, "authentication required\n",
                         [(b"www-authenticate", b'Basic realm="crystal-edge"')])
            return
        await self.app(scope, receive, send)
