"""JSON-lines sink: one line per batch report (and, optionally, per health snapshot).

Each line is one JSON object with a ``type`` field (``"psd"`` or ``"health"``) and the
payload under ``payload`` (for ``psd``: :func:`edge.sinks.psd_payload.psd_payload`, the
same payload as the MQTT ``psd`` topic). Lines are written whole, flushed and fsync'd before
:meth:`JsonlSink.publish` returns, so a report the sink accepted survives a power cut.
``path = "-"`` writes to standard output (no fsync). A write that fails (a full disk)
leaves no half line: the file is cut back to where the line began and opened afresh by
the next write, so the pipeline's retry of a required sink appends the line whole.

A file is rotated by size, as :class:`logging.handlers.RotatingFileHandler` does: when
the next line would take it past ``max_bytes``, ``PATH`` becomes ``PATH.1`` (``PATH.1``
becomes ``PATH.2``, ..., up to ``keep`` old files; the oldest is deleted) and a new
``PATH`` is started, so a headless appliance never fills its disk with reports.
A line is never split between two files.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import UserError
from edge.sinks.psd_payload import psd_payload

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport


class JsonlSinkConfig(BaseModel):
    """``[sinks.jsonl]``: batch reports as JSON lines in a file or on stdout."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="write batch reports as JSON lines")
    required: bool = Field(
        True, description="a batch's frames are acknowledged to the source only once its "
                          "line is written (retried until it is); false = a failed write is "
                          "logged and does not hold the batch back")
    path: str = Field(
        "-",
        description="output file (appended; relative paths are relative to the "
                    "configuration file), or '-' for standard output")
    health: bool = Field(
        False, description="also write every health snapshot as a line (type 'health')")
    fsync: bool = Field(True, description="fsync after every line (files only)")
    max_bytes: int = Field(
        50_000_000, ge=0,
        description="rotate the file when the next line would take it past this size "
                    "(bytes; 0 = never rotate)")
    keep: int = Field(5, ge=1, le=1000, description="rotated files kept (PATH.1 .. PATH.keep)")


class JsonlSink:
    """Append reports to a JSON-lines file or stdout (see the module docstring)."""

    name = "jsonl"

    def __init__(self, config: JsonlSinkConfig | None = None, *,
                 stream: TextIO | None = None) -> None:
        self.config = config or JsonlSinkConfig()
        self._stream = stream
        self._file: TextIO | None = None
        self._lock = threading.Lock()
        self._written = 0
        self._errors = 0
        self._last_error: str | None = None
        self._rotations = 0

    @property
    def to_stdout(self) -> bool:
        return self._stream is None and self.config.path == "-"

    def open(self) -> None:
        if self._stream is not None or self.to_stdout:
            return
        path = Path(self.config.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"sinks.jsonl.path {path}: cannot open for appending: "
                            f"{exc.strerror or exc}") from None

    def _out(self) -> TextIO:
        if self._stream is not None:
            return self._stream
        if self.to_stdout:
            return sys.stdout
        if self._file is None:  # not opened yet, or a rotation failed to reopen it
            self.open()
        assert self._file is not None
        return self._file

    def _rotate_if_needed(self, n_bytes: int) -> None:
        f = self._file
        limit = self.config.max_bytes
        if f is None or limit <= 0:
            return
        size = f.tell()
        if size == 0 or size + n_bytes <= limit:
            return
        path = Path(self.config.path)
        f.close()
        self._file = None
        keep = self.config.keep
        old = path.with_name(f"{path.name}.{keep}")
        if old.exists():
            old.unlink()
        for i in range(keep - 1, 0, -1):
            src = path.with_name(f"{path.name}.{i}")
            if src.exists():
                os.replace(src, path.with_name(f"{path.name}.{i + 1}"))
        os.replace(path, path.with_name(f"{path.name}.1"))
        self._rotations += 1
        self.open()

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            start: int | None = None
            try:
                self._rotate_if_needed(len(line.encode("utf-8")))
                out = self._out()
                if self._file is not None:
                    start = os.fstat(self._file.fileno()).st_size
                out.write(line)
                out.flush()
                if self.config.fsync and self._file is not None:
                    os.fsync(self._file.fileno())
            except (OSError, ValueError, UserError) as exc:
                self._errors += 1
                self._last_error = str(exc)
                self._drop_file(start)
                raise
            self._written += 1
            self._last_error = None

    def _drop_file(self, size: int | None) -> None:
        """After a failed write: close the file and cut it back to ``size`` bytes, so
        that no half line is left and the next write (a retry) opens it afresh."""
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.close()  # may flush the rest of the line; it is cut off below
        except (OSError, ValueError):
            pass
        if size is not None:
            try:
                os.truncate(self.config.path, size)
            except OSError:
                pass

    def publish(self, report: BatchReport) -> None:
        self._write({"type": "psd", "batch_id": report.batch_id,
                     "payload": psd_payload(report)})

    def publish_health(self, health: dict[str, Any]) -> None:
        if self.config.health:
            self._write({"type": "health", "payload": health})

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.config.path, "lines_written": self._written,
                "rotations": self._rotations, "errors": self._errors,
                "last_error": self._last_error}

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_jsonl(path: str | Path, *, type_: str | None = "psd") -> list[dict[str, Any]]:
    """Records of a JSON-lines file written by :class:`JsonlSink` (optionally one type)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if type_ is None or rec.get("type") == type_:
                    out.append(rec)
    return out
