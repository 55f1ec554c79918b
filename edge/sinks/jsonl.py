"""JSON-lines sink: one line per batch report (and, optionally, per health snapshot).

Each line is one JSON object with a ``type`` field (``"psd"`` or ``"health"``) and the
payload under ``payload`` (for ``psd``: :func:`edge.sinks.psd_payload.psd_payload`, the
same payload as the MQTT ``psd`` topic). Lines are written whole, flushed and fsync'd before
:meth:`JsonlSink.publish` returns, so a report the sink accepted survives a power cut.
``path = "-"`` writes to standard output (no fsync). A reader of the live file (a
historian's file input, ``crystal-edge trend --jsonl``) can see the end of a line that is
being written (the kernel makes a long write visible page by page): a line is complete
when its newline is there, and :func:`jsonl_records` reads it so. A write that fails
(a full disk) leaves no half line: the file is cut back to where the line began and
opened afresh by the next write, so the pipeline's retry of a required sink appends the
line whole. A line a power cut left unfinished (never acknowledged) is cut off when the
file is next opened, with one warning, so the next line does not join it.

:func:`jsonl_records` is the one reader of these files: it skips a last line without its
newline (a line being written) and names the file and line of one that is not JSON.

A file is rotated by size, as :class:`logging.handlers.RotatingFileHandler` does: when
the next line would take it past ``max_bytes``, ``PATH`` becomes ``PATH.1`` (``PATH.1``
becomes ``PATH.2``, ..., up to ``keep`` old files; the oldest is deleted) and a new
``PATH`` is started, so a headless appliance never fills its disk with reports.
A line is never split between two files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import UserError
from edge.sinks.psd_payload import psd_payload

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport

log = logging.getLogger(__name__)


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
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._written = 0
        self._errors = 0
        self._last_error: str | None = None
        self._rotations = 0

    @property
    def to_stdout(self) -> bool:
        return self._stream is None and self.config.path == "-"

    @property
    def _to_stream(self) -> bool:
        return self._stream is not None or self.to_stdout

    def open(self) -> None:
        if self._to_stream:
            return
        path = Path(self.config.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a+b", buffering=0)  # read too: the tail check
            cut = _cut_unfinished_line(self._file.fileno())
        except OSError as exc:
            raise UserError(f"sinks.jsonl.path {path}: cannot open for appending: "
                            f"{exc.strerror or exc}") from None
        if cut:
            log.warning("sinks.jsonl.path %s: cut off an unfinished line (%d bytes) that an "
                        "interrupted write left at the end", path, cut)

    def _emit(self, line: str) -> None:
        """Write ``line`` to the stream, or to the file (unbuffered, so that ``start`` in
        :meth:`_write` is where the line begins)."""
        if self._to_stream:
            out = self._stream if self._stream is not None else sys.stdout
            out.write(line)
            out.flush()
            return
        assert self._file is not None
        view = memoryview(line.encode("utf-8"))
        while view:  # a short write (a nearly full disk) goes on from where it stopped
            view = view[os.write(self._file.fileno(), view):]

    def _rotate_if_needed(self, n_bytes: int) -> None:
        f = self._file
        limit = self.config.max_bytes
        if f is None or limit <= 0:
            return
        size = os.fstat(f.fileno()).st_size
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
                if self._file is None and not self._to_stream:
                    self.open()  # not opened yet, or a rotation failed to reopen it
                if self._file is not None:
                    start = os.fstat(self._file.fileno()).st_size
                self._emit(line)
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


def _cut_unfinished_line(fd: int) -> int:
    """Truncate the file ``fd`` after its last newline; return the bytes cut off (0 when
    it is empty or ends with a newline)."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        if end == size and chunk.endswith(b"\n"):
            return 0
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            keep = start + nl + 1
            os.ftruncate(fd, keep)
            return size - keep
        end = start
    if size:
        os.ftruncate(fd, 0)
    return size


def jsonl_records(lines: Iterable[str], *, where: str = "") -> Iterator[dict[str, Any]]:
    """The records (JSON objects) of JSON-lines sink text, in order.

    Blank lines and a last line without its newline (one being written as the file is
    read) are skipped. Raises ValueError naming ``where`` and the line number for a
    complete line that is not a JSON object.
    """
    for i, line in enumerate(lines, 1):
        if not line.endswith("\n") or not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}:{i}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}:{i}: not a JSON object")
        yield obj


def read_jsonl(path: str | Path, *, type_: str | None = "psd") -> list[dict[str, Any]]:
    """Records of a JSON-lines file written by :class:`JsonlSink` (optionally one type)."""
    with open(path, encoding="utf-8", newline="") as f:
        return [rec for rec in jsonl_records(f, where=str(path))
                if type_ is None or rec.get("type") == type_]
