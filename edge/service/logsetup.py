"""Structured logging for the headless service: one line per event, no secrets.

Formats
-------
``json``
    One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and every field
    passed with ``extra={...}`` (plain JSON types; others become ``str``).
``kv``
    ``ts=... level=INFO logger=edge.service.pipeline.batch msg="batch closed" batch_id=3 n=120``.
``auto`` (default)
    ``kv`` without the timestamp (journald stamps every line itself) and with the
    syslog priority prefix ``<N>`` when stderr is connected to the journal
    (``JOURNAL_STREAM`` matches stderr), so ``journalctl -p warning`` works; ``kv`` with
    timestamps otherwise.

Secrets never reach a log line: a :class:`RedactionFilter` on the handler replaces
``password=...``/``token: ...``-style values, the password part of URLs
(``mqtts://user:pw@host``), ``Bearer`` tokens, fields whose *name* looks secret
(``extra={"password": ...}``), and every value registered with :func:`register_secret`
(the MQTT client registers the password it loads from ``$CREDENTIALS_DIRECTORY``).

Use::

    from edge.service.logsetup import LoggingConfig, setup_logging
    setup_logging(LoggingConfig(level="INFO", format="auto"))
    log.info("batch closed", extra={"batch_id": 3, "n_crystals": 120})
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
import time
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "JsonFormatter",
    "KeyValueFormatter",
    "LoggingConfig",
    "RedactionFilter",
    "journal_connected",
    "redact",
    "register_secret",
    "setup_logging",
]

REDACTED = "***"

LevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
FormatName = Literal["auto", "json", "kv"]


class LoggingConfig(BaseModel):
    """The ``[logging]`` section of the appliance configuration."""

    model_config = ConfigDict(extra="forbid")

    level: LevelName = Field("INFO", description="lowest level written to the log")
    format: FormatName = Field(
        "auto",
        description="'json' (one JSON object per line), 'kv' (key=value), or 'auto': kv, "
                    "journal-friendly (no timestamp, syslog priority prefix) under systemd",
    )


# --------------------------------------------------------------------------- redaction

_SECRET_KEY = (r"(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?"
               r"|authorization|private[_-]?key)")
_SECRET_NAME_RE = re.compile(rf"(?i)^[\w.-]*{_SECRET_KEY}[\w.-]*$")
# key=value, key: value, "key": "value" (quoted or bare values).
_KV_RE = re.compile(
    rf"""(?ix)
    (?P<key>["']?[\w.-]*{_SECRET_KEY}[\w.-]*["']?)
    (?P<sep>\s*[=:]\s*)
    (?P<val>(?:bearer|basic)\s+[^\s,;&}}\]]+|"[^"]*"|'[^']*'|[^\s,;&}}\]]+)
    """
)
_URL_PW_RE = re.compile(r"(?P<pre>\b[a-zA-Z][\w+.-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?P<at>@)")
_BEARER_RE = re.compile(r"(?i)\b(?P<pre>bearer|basic)\s+(?P<tok>[A-Za-z0-9._~+/=-]{6,})")

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | bytes | None) -> None:
    """Redact every later occurrence of ``value`` in log lines (min. 4 characters)."""
    if value is None:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = value.strip()
    if len(value) < 4:
        # Too short to replace safely (would mangle ordinary words); key/URL rules remain.
        return
    with _registered_lock:
        _registered.add(value)


def _clear_registered_secrets() -> None:
    """For tests."""
    with _registered_lock:
        _registered.clear()


def _quote_aware(val: str) -> str:
    if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
        return f"{val[0]}{REDACTED}{val[0]}"
    return REDACTED


def redact(text: str) -> str:
    """Return ``text`` with secret-looking values replaced by ``***``."""
    if not text:
        return text
    with _registered_lock:
        secrets = sorted(_registered, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PW_RE.sub(lambda m: f"{m['pre']}{REDACTED}{m['at']}", text)
    text = _BEARER_RE.sub(lambda m: f"{m['pre']} {REDACTED}", text)
    text = _KV_RE.sub(lambda m: f"{m['key']}{m['sep']}{_quote_aware(m['val'])}", text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_NAME_RE.match(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value("", v) for v in value]
    return value


class RedactionFilter(logging.Filter):
    """Rewrites a record in place so no handler can print a secret.

    The message is rendered (``msg % args``) and redacted; ``extra`` fields are redacted
    by name and by value; exception text is redacted by the formatters.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_crystal_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the event
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key in _extra_keys(record):
            setattr(record, key, _redact_value(key, getattr(record, key)))
        record._crystal_redacted = True
        return True


# --------------------------------------------------------------------------- formatters

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "_crystal_redacted",
}


def _extra_keys(record: logging.LogRecord) -> list[str]:
    return [k for k in vars(record) if k not in _STANDARD_ATTRS and not k.startswith("_")]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _iso_time(created: float) -> str:
    ms = int((created - int(created)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        return redact(record.exc_text)
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line (exception text included as a string field)."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _extra_keys(record):
            if key not in event:
                event[key] = _jsonable(getattr(record, key))
        exc = _exception_text(self, record)
        if exc:
            event["exc"] = exc
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


_BARE_RE = re.compile(r"^[\w.:/@+-]+$")


def _kv_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(_jsonable(value), separators=(",", ":"))
    elif isinstance(value, float):
        value = f"{value:.6g}"
    else:
        value = str(value)
    if value and _BARE_RE.match(value):
        return value
    return json.dumps(value, ensure_ascii=False)


# syslog priorities understood by journald's "<N>" prefix (SyslogLevelPrefix=yes).
_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class KeyValueFormatter(logging.Formatter):
    """``key=value`` per line; quoted where needed; newlines in exceptions escaped.

    Parameters
    ----------
    timestamps : bool
        Prefix ``ts=...`` (off under journald, which stamps lines itself).
    syslog_prefix : bool
        Prefix the syslog priority ``<N>`` so journald records the level.
    """

    def __init__(self, *, timestamps: bool = True, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if self.timestamps:
            parts.append(f"ts={_iso_time(record.created)}")
        parts += [f"level={record.levelname}", f"logger={record.name}",
                  f"msg={_kv_value(record.getMessage())}"]
        for key in _extra_keys(record):
            parts.append(f"{key}={_kv_value(getattr(record, key))}")
        exc = _exception_text(self, record)
        if exc:
            parts.append(f"exc={json.dumps(exc)}")  # one line: \n escaped
        line = " ".join(parts)
        if self.syslog_prefix:
            line = f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


# --------------------------------------------------------------------------- setup

def journal_connected(stream: TextIO | None = None,
                      environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is the journal stream systemd connected.

    systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for a service whose stdout/stderr go
    to journald; it applies only if the stream's file matches (a child whose stderr was
    redirected must not claim the journal).
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
        dev, ino = (int(x) for x in value.split(":", 1))
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == dev and st.st_ino == ino


class _Handler(logging.StreamHandler):
    """Marker class: the handler :func:`setup_logging` owns (replaced on reconfiguration)."""


def setup_logging(config: LoggingConfig | None = None, *, level: str | None = None,
                  fmt: str | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger: one structured line per event, redacted.

    Replaces the handler from a previous call and plain ``StreamHandler``s (such as the
    one ``logging.basicConfig`` installs in the CLI dispatcher); other handlers (test
    capture, file handlers a caller added) are kept.

    Parameters
    ----------
    config : LoggingConfig, optional
        The ``[logging]`` section; ``level`` and ``fmt`` override its fields.
    level, fmt : str, optional
        Level name and format name (see :class:`LoggingConfig`).
    stream : text stream, optional
        Where to write (default ``sys.stderr``).

    Returns
    -------
    logging.Handler
        The installed handler.
    """
    cfg = config or LoggingConfig()
    updates = {k: v for k, v in {"level": level, "format": fmt}.items() if v is not None}
    if updates:
        # Validated through the model: a wrong name is a clear pydantic error.
        cfg = LoggingConfig.model_validate({**cfg.model_dump(), **updates})
    stream = sys.stderr if stream is None else stream

    if cfg.format == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif cfg.format == "kv":
        formatter = KeyValueFormatter(timestamps=True)
    else:
        journal = journal_connected(stream)
        formatter = KeyValueFormatter(timestamps=not journal, syslog_prefix=journal)

    handler = _Handler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactionFilter())

    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Handler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, cfg.level))
    logging.captureWarnings(True)
    return handler
