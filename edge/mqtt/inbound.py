"""Guarding inbound MQTT messages: size, nesting depth, retained commands, log volume.

A message on the command topic (JSON ``cmd`` or Sparkplug NCMD) comes from anyone who may
publish there, possibly retained, possibly junk. Whatever it holds, it produces at most one
log line and never an exception in the network loop: an exception there drops the
connection, and a retained message comes straight back after the reconnect.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.mqtt.config import MqttConfig
    from edge.mqtt.message import Inbound, TopicMode

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 32
"""Deepest nesting of objects/arrays accepted in a JSON command (a command has depth 1)."""

EXCERPT_CHARS = 80


class InboundRejected(ValueError):
    """An inbound payload that is not decoded; the message says why in one line."""


def excerpt(payload: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``payload`` as printable text for a log line (at most ``limit`` chars)."""
    text = payload[: limit * 4].decode("utf-8", errors="replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:limit] + ("..." if len(text) > limit or len(payload) > limit * 4 else "")


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text`` (brackets inside strings ignored).

    A linear scan without recursion, so that the depth is known before ``json.loads``
    (which recurses once per level) ever sees the text.
    """
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def decode_json(payload: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``payload`` as JSON, or :class:`InboundRejected` (invalid UTF-8, too deep, not JSON)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InboundRejected(f"not UTF-8 (byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise InboundRejected(f"JSON nested {depth} levels deep (at most {max_depth})")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InboundRejected(f"not JSON ({exc})") from None


class LogLimiter:
    """At most ``burst`` log lines per ``window_s`` per key; the rest are only counted.

    A flood of junk on the command topic must not flood the journal: when a key goes over
    its budget one line says so, and the next line after the window names how many
    messages went unlogged.
    """

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (start, logged, muted)

    def allow(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """(log this one?, messages muted since the last logged line of ``key``)."""
        now = time.monotonic() if now is None else now
        start, logged, muted = self._windows.get(key, (now, 0, 0))
        if now - start >= self.window_s:
            start, logged = now, 0
        if logged < self.burst:
            self._windows[key] = (start, logged + 1, 0)
            return True, muted
        if muted == 0:
            log.warning("mqtt: more than %d ignored messages on %s within %g s; further ones "
                        "are counted, not logged", self.burst, key, self.window_s)
        self._windows[key] = (start, logged, muted + 1)
        return False, muted + 1


class RecentIds:
    """The last ``size`` command request ids, to ignore a command sent twice."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, request_id: str | None) -> bool:
        """True when ``request_id`` came before; remembers it otherwise (None: never seen)."""
        if not request_id:
            return False
        if request_id in self._ids:
            self._ids.move_to_end(request_id)
            return True
        self._ids[request_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False


class InboundGate:
    """Decides, per inbound message, whether the sink acts on it; logs what it drops.

    Dropped: retained messages (one line per topic), empty payloads, payloads over
    ``max_inbound_bytes``, what the topic mode rejects (not UTF-8, too deep, not JSON,
    not the command schema, not Sparkplug B) and a ``request_id`` seen before.
    """

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.ignored = 0
        self._limiter = LogLimiter()
        self._recent_ids = RecentIds()
        self._retained_warned: set[str] = set()

    def ignore(self, topic: str, reason: str, payload: bytes) -> None:
        """One rate-limited WARNING line for a message that is not acted on."""
        self.ignored += 1
        allowed, muted = self._limiter.allow(topic)
        if allowed:
            more = f"; {muted} more not logged" if muted else ""
            log.warning("mqtt: ignored message on %s: %s (payload %r%s)", topic,
                        (reason.splitlines() or ["?"])[0], excerpt(payload), more)

    def check(self, mode: TopicMode, topic: str, payload: bytes, *,
              retain: bool) -> Inbound | None:
        """The message's meaning when the sink acts on it (a command or a rebirth request),
        None when it is dropped (and said so in the log)."""
        if retain:  # a command is for now; a retained one would act on every connect
            self.ignored += 1
            if topic not in self._retained_warned:
                self._retained_warned.add(topic)
                log.warning("mqtt: retained message on %s ignored (commands are never "
                            "retained; clear it by publishing an empty retained message); "
                            "further retained messages there are ignored silently", topic)
            return None
        if not payload:
            log.info("mqtt: empty message on %s ignored", topic)
            return None
        limit = self.config.max_inbound_bytes
        if len(payload) > limit:
            self.ignore(topic, f"{len(payload)} bytes, more than sinks.mqtt.max_inbound_bytes "
                        f"({limit})", payload)
            return None
        result = mode.inbound(topic, payload)
        if result.kind == "rejected":
            self.ignore(topic, result.reason, payload)
            return None
        if result.command is not None and self._recent_ids.seen(result.command.request_id):
            self.ignored += 1
            log.warning("mqtt: command %s on %s ignored: request %s was received before",
                        result.command.command, topic, result.command.request_id)
            return None
        return result
