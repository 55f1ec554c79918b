"""Store-and-forward outbox: batch reports on disk until the broker acknowledged them.

Every report is committed to an SQLite file (WAL journal, ``synchronous=FULL``, so a
committed row survives a power cut) before anything is sent, and deleted only when the
broker's PUBACK for it arrived. After a reconnect or a restart the backlog goes out oldest
first. A report may therefore arrive twice (sent, then the connection or the process died
before the PUBACK); both copies carry the same ``batch_id``.

Size bound (``outbox_max_messages``) and policy when it is reached:

* ``drop_oldest`` (default): the oldest waiting report is deleted to make room; the plant
  keeps receiving current data after a long outage.
* ``refuse_newest``: the new report is refused (:class:`OutboxFullError`); the backlog is
  kept intact.

Either way the ``dropped`` counter (persisted in the file) goes up and a warning is logged.

The file is opened through :func:`edge.service.statefiles.open_db` (kind :data:`OUTBOX_DB`): an
empty, cut-short or foreign file is moved aside as ``outbox.sqlite3.corrupt-<time>``, its
readable reports are copied into a new outbox, and one ERROR line says what was kept.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.errors import TransientError
from edge.service.statefiles import DbKind, open_db

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


OUTBOX_DB = DbKind(what="MQTT outbox", app_id=0x4350_4F42,  # "CPOB"
                   schema=_SCHEMA, tables=("outbox", "counters"))


def highest_batch_id(path: str | Path) -> int | None:
    """The highest batch id waiting in the outbox file at ``path`` (read-only), or None
    when there is none or the file cannot be read."""
    try:
        db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT MAX(batch_id) FROM outbox").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return int(row[0]) if row and row[0] is not None else None


class OutboxFullError(RuntimeError):
    """The outbox is full and its policy is ``refuse_newest``."""


@dataclass(frozen=True)
class OutboxItem:
    """One waiting report: ``id`` orders the backlog (oldest first)."""

    id: int
    batch_id: int
    created: float
    payload: str


class Outbox:
    """The on-disk queue of unacknowledged batch reports (thread-safe).

    Parameters
    ----------
    path
        SQLite file; created (with its directory) when missing.
    max_messages
        Most reports kept.
    policy
        ``"drop_oldest"`` or ``"refuse_newest"`` when ``max_messages`` is reached.
    """

    def __init__(self, path: str | Path, *, max_messages: int = 100_000,
                 policy: Literal["drop_oldest", "refuse_newest"] = "drop_oldest") -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if policy not in ("drop_oldest", "refuse_newest"):
            raise ValueError(f"policy must be 'drop_oldest' or 'refuse_newest', got {policy!r}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.policy = policy
        self._lock = threading.Lock()
        self._db = open_db(self.path, OUTBOX_DB, timeout=30.0)
        try:
            self._depth = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            row = self._db.execute(
                "SELECT value FROM counters WHERE name='dropped'").fetchone()
            self._dropped = int(row[0]) if row else 0
        except sqlite3.Error as exc:  # checked by open_db: the disk failed since
            self._db.close()
            raise TransientError(f"{self.path}: cannot read the MQTT outbox: {exc}") from None
        if self._depth:
            log.info("mqtt outbox %s: %d report(s) waiting from before", self.path, self._depth)

    # ------------------------------------------------------------------ writing
    def put(self, batch_id: int, payload: str) -> int:
        """Commit one report durably; returns its outbox id.

        Raises :class:`OutboxFullError` when full under ``refuse_newest``.
        """
        with self._lock:
            dropped_now = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._depth >= self.max_messages:
                    if self.policy == "refuse_newest":
                        self._bump_dropped(1)
                        self._db.execute("COMMIT")
                        self._dropped += 1
                        log.warning("mqtt outbox full (%d reports): refused batch %d "
                                    "(policy refuse_newest, %d refused so far)",
                                    self._depth, batch_id, self._dropped)
                        raise OutboxFullError(
                            f"{self.path}: MQTT outbox full ({self._depth} reports), "
                            f"batch {batch_id} refused")
                    excess = self._depth - self.max_messages + 1
                    cur = self._db.execute(
                        "DELETE FROM outbox WHERE id IN "
                        "(SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,))
                    dropped_now = cur.rowcount
                    self._bump_dropped(dropped_now)
                cur = self._db.execute(
                    "INSERT INTO outbox (batch_id, created, payload) VALUES (?, ?, ?)",
                    (int(batch_id), time.time(), payload))
                self._db.execute("COMMIT")
            except OutboxFullError:
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth += 1 - dropped_now
            if dropped_now:
                self._dropped += dropped_now
                log.warning("mqtt outbox full: dropped the oldest %d report(s) for batch %d "
                            "(policy drop_oldest, %d dropped so far)",
                            dropped_now, batch_id, self._dropped)
            return int(cur.lastrowid)

    def _bump_dropped(self, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (n,))

    def ack(self, ids: list[int] | tuple[int, ...]) -> int:
        """Delete acknowledged reports (one transaction); returns how many were present."""
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                for i in ids:
                    removed += self._db.execute("DELETE FROM outbox WHERE id = ?",
                                                (int(i),)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed
            return removed

    # ------------------------------------------------------------------ reading
    def peek(self, after_id: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Up to ``limit`` waiting reports with id > ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, batch_id, created, payload FROM outbox WHERE id > ? "
                "ORDER BY id LIMIT ?", (int(after_id), int(limit))).fetchall()
        return [OutboxItem(int(r[0]), int(r[1]), float(r[2]), str(r[3])) for r in rows]

    @property
    def depth(self) -> int:
        """Reports waiting (not yet acknowledged)."""
        return self._depth

    @property
    def dropped(self) -> int:
        """Reports dropped or refused because the outbox was full (over the file's life)."""
        return self._dropped

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover - closing twice
                pass
