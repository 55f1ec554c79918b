"""Faults given to the running appliance, one at a time, each logged with its times.

Kinds: bad files dropped into the watched folder, a broker restart, ``kill -9`` of the
service, a full state directory for 30 s, retained junk on the command topic, SIGHUP.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BAD_FILES = ("png_60000x60000_header", "png_8000x8000", "jpeg_truncated", "empty",
             "random_bytes_png")
JUNK_COMMANDS = ("nested_json", "invalid_utf8", "reload_config")
WEIGHTS = {"bad_file": 4, "broker_restart": 2, "kill9": 2, "disk_full": 1,
           "retained_junk": 2, "sighup": 1}
DISK_FULL_S = 30.0
RETAIN_HOLD_S = (10.0, 20.0)
BROKER_DOWN_S = (5.0, 20.0)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def grey_png(width: int, height: int, *, rows: int, value: int = 128) -> bytes:
    """An 8-bit grey PNG whose header declares ``width`` x ``height`` px, with pixel data
    for its first ``rows`` rows only (all rows: a valid image)."""
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    data = b"".join(comp.compress(row) for _ in range(rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def truncated_jpeg() -> bytes:
    """The first half of a 640x480 JPEG (no end marker)."""
    import cv2
    import numpy as np

    img = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf[: len(buf) // 2])


def bad_file(kind: str, rng: random.Random) -> tuple[str, bytes]:
    """``(suffix, content)`` of one bad file of ``kind`` (one of :data:`BAD_FILES`)."""
    if kind == "png_60000x60000_header":
        return ".png", grey_png(60000, 60000, rows=1)
    if kind == "png_8000x8000":
        return ".png", grey_png(8000, 8000, rows=8000)
    if kind == "jpeg_truncated":
        return ".jpg", truncated_jpeg()
    if kind == "empty":
        return ".png", b""
    return ".png", rng.randbytes(4096)


def junk_command(kind: str) -> bytes:
    """A command payload that must not hurt the service (one of :data:`JUNK_COMMANDS`)."""
    if kind == "nested_json":
        return b'{"command":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    if kind == "invalid_utf8":
        return b'\xff\xfe{"command": "close_batch"}\xc3\x28'
    return (b'{"schema_id": "crystal-psd/command", "command": "reload_config", '
            b'"request_id": "soak-retained"}')


def publish_retained(port: int, topic: str, payload: bytes) -> None:
    """Publish ``payload`` retained (QoS 1); an empty payload clears the retained message."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-junk-{time.time_ns()}",
                    protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def fill_disk(path: Path) -> int:
    """Write ``path`` until the file system is full; bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:  # unbuffered: no ENOSPC left for close()
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    n += f.write(b"\0" * chunk) or 0
            except OSError:
                pass
        try:
            os.fsync(f.fileno())
        except OSError:
            pass
    return n


@dataclass
class Injector:
    """Inject faults into the appliance; every injection appends a record to ``log``.

    ``supervisor`` needs ``send(sig, reason)``/``running_pid()``/``now()``, ``broker``
    ``start()``/``stop()``/``port``.
    """

    inbox: Path
    staging: Path
    state_dir: Path
    supervisor: Any
    broker: Any
    cmd_topic: str
    rng: random.Random
    disk_full: bool = True
    only: tuple[str, ...] = ()
    log: list[dict[str, Any]] = field(default_factory=list)
    bad_names: list[str] = field(default_factory=list)

    def kinds(self) -> dict[str, int]:
        """Kind -> weight of the faults this run draws from."""
        return {k: w for k, w in WEIGHTS.items()
                if (self.disk_full or k != "disk_full") and (not self.only or k in self.only)}

    def inject_random(self) -> dict[str, Any]:
        kinds = self.kinds()
        kind = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
        return self.inject(kind)

    def inject(self, kind: str) -> dict[str, Any]:
        run: Callable[[], tuple[str, str]] = getattr(self, f"_{kind}")
        t_start = self.supervisor.now()
        try:
            variant, detail = run()
        except (OSError, RuntimeError, ValueError) as exc:
            variant, detail = "", f"injection failed: {exc}"
        rec = {"kind": kind, "variant": variant, "detail": detail, "t_start": round(t_start, 2),
               "t_end": round(self.supervisor.now(), 2)}
        self.log.append(rec)
        print(f"[{rec['t_start']:7.1f} s] fault {kind}: {detail} (ended {rec['t_end']:.1f} s)",
              file=sys.stderr, flush=True)
        return rec

    def _bad_file(self) -> tuple[str, str]:
        kind = self.rng.choice(BAD_FILES)
        suffix, content = bad_file(kind, self.rng)
        name = f"bad-{len(self.bad_names):04d}-{kind}{suffix}"
        (self.staging / name).write_bytes(content)
        os.replace(self.staging / name, self.inbox / name)
        self.bad_names.append(name)
        return kind, f"{name} ({len(content)} bytes)"

    def _broker_restart(self) -> tuple[str, str]:
        down = self.rng.uniform(*BROKER_DOWN_S)
        self.broker.stop()
        time.sleep(down)
        for attempt in range(3):  # a port still in TIME_WAIT can refuse the first bind
            try:
                self.broker.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        return "", f"broker down {down:.1f} s"

    def _wait_pid(self, timeout: float = 10.0) -> int | None:
        t_end = time.monotonic() + timeout
        while (pid := self.supervisor.running_pid()) is None and time.monotonic() < t_end:
            time.sleep(0.1)
        return pid

    def _kill9(self) -> tuple[str, str]:
        self._wait_pid()
        pid = self.supervisor.send(signal.SIGKILL, "injected kill -9")
        return "", f"kill -9 pid {pid}" if pid else "kill -9: no service running"

    def _sighup(self) -> tuple[str, str]:
        self._wait_pid()
        pid = self.supervisor.send(signal.SIGHUP)
        return "", f"SIGHUP pid {pid}" if pid else "SIGHUP: no service running"

    def _disk_full(self) -> tuple[str, str]:
        filler = self.state_dir / "soak-filler.bin"
        try:
            n = fill_disk(filler)
            time.sleep(DISK_FULL_S)
        finally:
            filler.unlink(missing_ok=True)
        return "", f"state dir full ({n / 1e6:.1f} MB filler) for {DISK_FULL_S:.0f} s"

    def _retained_junk(self) -> tuple[str, str]:
        kind = self.rng.choice(JUNK_COMMANDS)
        hold = self.rng.uniform(*RETAIN_HOLD_S)
        publish_retained(self.broker.port, self.cmd_topic, junk_command(kind))
        time.sleep(hold)
        publish_retained(self.broker.port, self.cmd_topic, b"")
        return kind, f"retained {kind} on {self.cmd_topic} for {hold:.1f} s"
