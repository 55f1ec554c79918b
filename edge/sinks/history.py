"""Batch history: the last days of ``psd`` payloads in the state directory, bounded.

The operators' page (:mod:`edge.web`) draws its trends from here, and ``crystal-edge
trend --state-dir`` reads the same file offline. Each accepted batch becomes one row of
``batch_history.sqlite3`` (the payload of :func:`edge.sinks.psd_payload.psd_payload`,
the one the other sinks publish, as JSON text), keyed by batch id so a retried delivery
replaces its row. After every insert rows older than ``days`` (by ``batch_end``) and all
but the newest ``max_batches`` are deleted, so the file stays bounded on a headless
appliance. The database is opened through :func:`edge.service.statefiles.open_db`
(stamped, checked, moved aside when damaged).

``[sinks.history] enabled`` left unset follows ``[web] enabled``: the page needs it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edge.service.statefiles import DbKind, open_db
from edge.sinks.psd_payload import psd_payload

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport

__all__ = ["HISTORY_DB", "HISTORY_FILE", "HistorySink", "HistorySinkConfig", "read_history"]

HISTORY_FILE = "batch_history.sqlite3"

HISTORY_DB = DbKind(
    what="batch history", app_id=0x4350_4849,  # "CPHI"
    schema="CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY, "
           "t_end REAL NOT NULL, payload TEXT NOT NULL);"
           "CREATE INDEX IF NOT EXISTS batches_t_end ON batches (t_end);",
    tables=("batches",))


class HistorySinkConfig(BaseModel):
    """``[sinks.history]``: the bounded batch history in the state directory."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(
        None, description="keep the batch history (batch_history.sqlite3 in the state "
                          "directory); unset = on exactly when [web] is enabled")
    required: bool = Field(
        False, description="a batch's frames wait for its history row (false: a failed "
                           "write is logged and counted, nothing waits)")
    days: float = Field(7.0, gt=0, le=3650, description="batches older than this many days "
                        "(by batch_end) are deleted")
    max_batches: int = Field(20_000, ge=1, le=10_000_000,
                             description="at most this many batches are kept (the newest)")


def _t_end(payload: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(payload["batch_end"])).timestamp()
    except (KeyError, ValueError):
        return time.time()


class HistorySink:
    """Keep every published batch's payload, bounded (see the module docstring)."""

    name = "history"

    def __init__(self, config: HistorySinkConfig | None = None, *,
                 state_dir: str | Path) -> None:
        self.config = config or HistorySinkConfig()
        self.path = Path(state_dir) / HISTORY_FILE
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._written = 0
        self._last_error: str | None = None

    def open(self) -> None:
        self._db = open_db(self.path, HISTORY_DB)

    def publish(self, report: BatchReport) -> None:
        self.add(psd_payload(report))

    def add(self, payload: dict[str, Any]) -> None:
        """Store one payload and prune by age and count (one transaction)."""
        if self._db is None:
            self.open()
        assert self._db is not None
        t_end = _t_end(payload)
        cutoff = time.time() - self.config.days * 86400.0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)",
                                 (int(payload["batch_id"]), t_end, json.dumps(payload)))
                self._db.execute("DELETE FROM batches WHERE t_end < ?", (cutoff,))
                self._db.execute(
                    "DELETE FROM batches WHERE batch_id NOT IN (SELECT batch_id FROM batches "
                    "ORDER BY t_end DESC, batch_id DESC LIMIT ?)", (self.config.max_batches,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._last_error = f"{self.path}: {exc}"
                raise
            self._written += 1

    def publish_health(self, health: dict[str, Any]) -> None:
        """The history keeps batches only."""

    def health(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self._written,
                "last_error": self._last_error}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def read_history(path: str | Path, *, since: float | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Payloads of a history file, oldest first (read-only; [] when there is no file).

    Parameters
    ----------
    path : path
        ``batch_history.sqlite3`` or the state directory holding it.
    since : float, optional
        Only batches that ended at or after this UNIX time.
    limit : int, optional
        Only the newest ``limit`` of those.
    """
    p = Path(path)
    if p.is_dir():
        p = p / HISTORY_FILE
    if not p.is_file():
        return []
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute(
            "SELECT payload FROM batches WHERE t_end >= ? ORDER BY t_end DESC, batch_id DESC "
            "LIMIT ?", (-1e18 if since is None else since, -1 if limit is None else limit)
        ).fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in reversed(rows)]
