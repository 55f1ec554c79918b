"""Folder source: new image files dropped into a directory by the camera software.

The directory is polled. A file is read once its size and modification time have been
the same for ``stable_polls`` consecutive polls (and it is at least ``min_age_s`` old),
and an empty file or a PNG/JPEG without its end marker is re-checked for
``truncated_grace_s``, so a
file that is still being written is never read; names the camera software uses
while writing (``.*``, ``*.tmp``, ``*.part``, ``*~``) are ignored. Files are processed
once each, in arrival order (modification time, then name).

Bookkeeping lives in ``<state dir>/folder_source.sqlite3``: a file (path, size, mtime)
is recorded as ``done`` or ``failed`` only when the pipeline acknowledges it, i.e. when
the batch it was counted into has been closed and handed to the sinks. A restart
therefore neither re-processes delivered files nor loses undelivered ones.

Files are decoded by :mod:`edge.vision.decode` (size and header checked against ``[decode]``
before decoding, bit depth and channels kept). A file that cannot be decoded (too large,
corrupt, truncated, not an image) is yielded as an error frame with the reason (the
pipeline counts it as a rejection; one warning names the file) and recorded ``failed``:
it is never retried, unless it is rewritten (new size or mtime). A file that cannot be
read at all (an OS error, anything unexpected), or that the process died while decoding
(tries are counted in the ledger before decoding, so they survive a crash), is tried
``max_attempts`` times, then reported the same way. No single file stops the source.

A symbolic link (file or subfolder) that resolves outside the watched folder is not
followed: one warning names it and it is recorded ``failed``. A watched folder that does
not exist (yet) is waited for, e.g. a share mounted late at boot: the source says so once
in the log and in its health (``waiting_for``), and starts when the folder appears.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import TransientError, UserError
from edge.service.state import FOLDER_DB_FILE
from edge.sources.base import Frame, idle
from edge.sources.folderscan import inside, scan
from edge.sources.ledger import Key, Ledger
from edge.vision.decode import DecodeConfig, DecodeError, decode_file, probe_file

log = logging.getLogger(__name__)

DEFAULT_PATTERNS = ["*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.bmp"]
DEFAULT_IGNORE = [".*", "*.tmp", "*.part", "*.partial", "*~", "*.crdownload"]


class FolderSourceConfig(BaseModel):
    """``[source]`` with ``type = "folder"``: watch a directory for new image files."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = Field("folder", description="source type")
    path: Path = Field(
        Path("incoming"),
        description="directory the camera software writes image files into (relative "
                    "paths are relative to the configuration file); one that does not "
                    "exist yet is waited for")
    patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PATTERNS),
        description="file-name patterns to process (case-insensitive fnmatch)")
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="file-name patterns never read (files still being written)")
    recursive: bool = Field(False, description="also watch subdirectories")
    poll_s: float = Field(0.5, gt=0, le=60, description="seconds between directory scans")
    stable_polls: int = Field(
        2, ge=1, le=20,
        description="a file is read once its size and mtime were identical in this many "
                    "consecutive scans (2 = unchanged between two scans)")
    min_age_s: float = Field(
        0.0, ge=0, description="and once its mtime is at least this many seconds old")
    truncated_grace_s: float = Field(
        10.0, ge=0,
        description="an empty file, or a PNG/JPEG without its end marker, is taken for "
                    "still being written and re-checked until its mtime is this old; then "
                    "it is reported unreadable")
    max_attempts: int = Field(
        3, ge=1, le=100,
        description="a file that cannot be read (an OS error, an unexpected failure, or "
                    "the process dying while it is decoded) is tried this many times, then "
                    "reported unreadable and recorded failed; a file that reads but does not "
                    "decode fails at once")
    after: Literal["keep", "move", "delete"] = Field(
        "keep",
        description="what to do with a file once its batch is delivered: keep it, move "
                    "it to move_to, or delete it")
    move_to: Path | None = Field(
        None, description="destination directory for after = 'move' (created if missing)")
    failed_to: Path | None = Field(
        None,
        description="directory unreadable files are moved to (None: leave them; they "
                    "are recorded and never retried)")

    @model_validator(mode="after")
    def _move_needs_target(self) -> FolderSourceConfig:
        if self.after == "move" and self.move_to is None:
            raise ValueError("after = 'move' needs move_to")
        return self


def watch_summary(directory: Path, c: FolderSourceConfig) -> str:
    """What the source watches and what becomes of a file, for the start-up log line."""
    after = {"keep": "processed files stay where they are",
             "move": f"processed files move to {c.move_to}",
             "delete": "processed files are deleted"}[c.after]
    return (f"watching {directory} for {', '.join(c.patterns)} "
            f"(recursive: {'yes' if c.recursive else 'no'}), {after}")


class FolderSource:
    """Poll a directory for new image files (see the module docstring).

    Parameters
    ----------
    config : FolderSourceConfig
        The ``[source]`` section.
    state_dir : path
        Where ``folder_source.sqlite3`` is kept.
    decode : DecodeConfig, optional
        The ``[decode]`` limits (defaults when None).
    """

    name = "folder"

    def __init__(self, config: FolderSourceConfig, *, state_dir: str | Path,
                 decode: DecodeConfig | None = None) -> None:
        self.config = config
        self.dir = Path(config.path)
        self.state_dir = Path(state_dir)
        self.decode = decode or DecodeConfig()
        self._ledger: Ledger | None = None
        self._seen: dict[str, tuple[tuple[int, int], int]] = {}
        self._inflight: set[Key] = set()
        self._done: set[Key] = set()
        self._lock = threading.Lock()
        self._seq = 0
        self._stats = {"files_read": 0, "files_failed": 0, "files_acked": 0,
                       "after_errors": 0, "links_refused": 0}
        self._pending = 0
        self._last_failed: dict[str, str] | None = None
        self._waiting = False
        self._announced = False

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"source.path {self.dir}: not a directory")
        for key, d in (("move_to", self.config.move_to), ("failed_to", self.config.failed_to)):
            if d is not None:
                try:
                    Path(d).mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # e.g. a share not mounted yet: try again
                    raise TransientError(f"source.{key} {d}: cannot create: "
                                         f"{exc.strerror}") from None
        self._ledger = Ledger(self.state_dir / FOLDER_DB_FILE)
        if not self._announced:  # once per run, not on every restart of the source
            self._announced = True
            log.info("folder source: %s", watch_summary(self.dir, self.config))
        self._folder_present()

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _folder_present(self) -> bool:
        """True when the watched folder exists; says once when it is missing or back."""
        present = self.dir.is_dir()
        if not present and not self._waiting:
            log.warning("folder source: %s does not exist (yet); waiting for it "
                        "(a share not mounted yet?)", self.dir)
        elif present and self._waiting:
            log.info("folder source: %s is there now; watching it", self.dir)
        self._waiting = not present
        return present

    # -- scanning ----------------------------------------------------------------
    def _inside(self, path: str | Path) -> bool:
        return inside(path, self.dir)

    def _scan(self) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        return scan(self.dir, patterns=self.config.patterns, ignore=self.config.ignore,
                    recursive=self.config.recursive)

    def _ready(self) -> list[Key]:
        """Files that are complete, new and not in flight, in arrival order."""
        assert self._ledger is not None
        scan, outside = self._scan()
        now_ns = time.time_ns()
        min_age_ns = int(self.config.min_age_s * 1e9)
        ready: list[Key] = []
        seen: dict[str, tuple[tuple[int, int], int]] = {}
        done: set[Key] = set()
        for rel, sig in outside.items():
            key = (rel, sig[0], sig[1])
            if key not in self._done and not self._ledger.is_processed(*key):
                self._refuse_link(key)
            done.add(key)
        for rel, sig in scan.items():
            key = (rel, sig[0], sig[1])
            with self._lock:
                if key in self._inflight:
                    continue
            if key in self._done or self._ledger.is_processed(*key):
                done.add(key)  # cached so that a kept file costs no query next scan
                if key not in self._done:
                    self._redo_after(rel)
                continue
            prev = self._seen.get(rel)
            count = prev[1] + 1 if prev is not None and prev[0] == sig else 1
            seen[rel] = (sig, count)
            if count >= self.config.stable_polls and now_ns - sig[1] >= min_age_ns:
                ready.append(key)
        self._seen = seen
        self._done = done
        self._pending = len(seen)
        ready.sort(key=lambda k: (k[2], k[0]))
        return ready

    def _refuse_link(self, key: Key) -> None:
        """A link out of the watched folder: not followed, recorded failed at once."""
        assert self._ledger is not None
        reason = (f"unreadable: a symbolic link to {os.path.realpath(self.dir / key[0])}, "
                  f"outside the watched folder (not followed)")
        log.warning("folder source: %s: %s", self.dir / key[0], reason)
        self._ledger.mark([(*key, "failed", reason)])
        self._stats["links_refused"] += 1
        self._stats["files_failed"] += 1
        self._last_failed = {"file": key[0], "reason": reason}
        self._apply_after(key[0], failed=True)

    def _redo_after(self, rel: str) -> None:
        """A recorded file is still here: finish its move/delete (crash in between)."""
        if self.config.after != "keep":
            self._apply_after(rel, failed=False)

    def frame_size_hint(self, max_files: int = 3) -> tuple[int, int] | None:
        """(H, W) of the oldest file still to be processed, or None.

        Lets the service load the model before it reports READY. Reads the headers of at
        most ``max_files`` files (skipping unreadable ones and those over the
        ``[decode]`` limits); decodes nothing, marks nothing, never raises.
        """
        try:
            if self._ledger is None:
                self.open()
            assert self._ledger is not None
            if not self._folder_present():
                return None
            pending = [(rel, sig) for rel, sig in self._scan()[0].items()
                       if not self._ledger.is_processed(rel, *sig)]
        except Exception as exc:  # only a hint: the frames themselves report problems
            log.warning("folder source: no frame size from %s: %s", self.dir, exc)
            return None
        for rel, _sig in sorted(pending, key=lambda kv: kv[1][1])[:max_files]:
            try:
                return probe_file(self.dir / rel, config=self.decode).hw
            except Exception:  # reported when the file itself is read
                continue
        return None

    # -- reading -----------------------------------------------------------------
    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        if self._ledger is None:
            self.open()
        while not stop.is_set():
            if self._folder_present():
                for rel, size, mtime_ns in self._ready():
                    if stop.is_set():
                        return
                    frame = self._read(rel, size, mtime_ns)
                    if frame is not None:
                        yield frame
            yield None  # heartbeat: one scan done
            yield from idle(stop, self.config.poll_s)

    def _decode(self, key: Key) -> tuple[Any, str | None, str]:
        """``(image, error, kind)``; ``kind`` "retry" = look again next scan.

        Every try is counted in the ledger before the file is decoded and forgotten once
        it is read, so a file that kills the process while it is decoded (a decoder crash,
        the memory limit) is tried ``max_attempts`` times across restarts, then recorded
        failed instead of taking the service down for ever.
        """
        assert self._ledger is not None
        path = self.dir / key[0]
        if not self._inside(path):  # replaced by a link since the scan
            return None, "unreadable: a symbolic link out of the watched folder", "link"
        n = self._ledger.attempt(key)
        if n > self.config.max_attempts:
            return None, (f"unreadable: not tried again: the service stopped {n - 1} times "
                          f"while reading it"), "crash"
        try:
            image = decode_file(path, config=self.decode).image
            st = path.stat()
        except DecodeError as exc:
            if exc.kind != "io":
                self._ledger.read_ok(key)
                return None, f"unreadable: {exc.reason}", exc.kind
            failure = exc.reason
        except Exception as exc:  # nothing about one file may stop the source
            failure = f"{type(exc).__name__}: {exc}"
        else:
            self._ledger.read_ok(key)
            if (st.st_size, st.st_mtime_ns) != key[1:]:
                return None, None, "retry"  # still being written after all
            return image, None, "ok"
        if not path.exists():
            self._ledger.read_ok(key)
            return None, None, "retry"  # vanished: nothing to report
        if n < self.config.max_attempts:
            log.debug("folder source: %s: attempt %d failed: %s", path, n, failure)
            return None, None, "retry"
        return None, f"unreadable: failed {n} times: {failure}", "io"

    def _read(self, rel: str, size: int, mtime_ns: int) -> Frame | None:
        key = (rel, size, mtime_ns)
        image, error, kind = self._decode(key)
        young = time.time_ns() - mtime_ns < self.config.truncated_grace_s * 1e9
        if kind == "retry" or (kind in ("truncated", "empty") and young):
            # most likely still being written (created, nothing or not all written yet):
            # look again next scan
            self._seen.pop(rel, None)
            return None
        with self._lock:
            self._inflight.add(key)
        self._stats["files_read"] += 1
        if error:
            self._stats["files_failed"] += 1
            self._last_failed = {"file": rel, "reason": error}
            log.warning("folder source: %s: %s", self.dir / rel, error)
        # capture time = when the camera software finished writing the file
        frame = Frame(name=rel, seq=self._seq, image=image, t_capture=mtime_ns / 1e9,
                      error=error, token=key)
        self._seq += 1
        return frame

    # -- acknowledgement ---------------------------------------------------------
    def ack(self, frames: Iterable[Frame]) -> None:
        entries = []
        for fr in frames:
            if fr.token is None:
                continue
            rel, size, mtime_ns = fr.token
            status = "failed" if fr.error else "done"
            entries.append((rel, size, mtime_ns, status, fr.error))
        if not entries or self._ledger is None:
            return
        self._ledger.mark(entries)
        with self._lock:
            for e in entries:
                self._inflight.discard((e[0], e[1], e[2]))
        self._stats["files_acked"] += len(entries)
        for rel, _, _, status, _ in entries:
            self._apply_after(rel, failed=status == "failed")

    def _apply_after(self, rel: str, *, failed: bool) -> None:
        src = self.dir / rel
        try:
            if failed:
                if self.config.failed_to is not None:
                    _move(src, Path(self.config.failed_to))
                return
            if self.config.after == "delete":
                src.unlink(missing_ok=True)
            elif self.config.after == "move" and self.config.move_to is not None:
                _move(src, Path(self.config.move_to))
        except OSError as exc:
            self._stats["after_errors"] += 1
            log.warning("folder source: cannot %s %s: %s",
                        "move" if failed or self.config.after == "move" else "delete", src, exc)

    def health(self) -> dict[str, Any]:
        with self._lock:
            inflight = len(self._inflight)
        return {"type": self.name, "path": str(self.dir), "pending_files": self._pending,
                "in_flight": inflight, "last_failed": self._last_failed,
                "waiting_for": str(self.dir) if self._waiting else None, **self._stats}


def _move(src: Path, dest_dir: Path) -> None:
    if not src.exists() and not src.is_symlink():
        return
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    n = 1
    while dest.exists():
        dest = dest_dir / f"{src.stem}.{n}{src.suffix}"
        n += 1
    shutil.move(str(src), str(dest))
