"""The folder source's ledger: which files were processed, and the tries at reading them.

``<state dir>/folder_source.sqlite3`` (opened by :func:`edge.service.statefiles.open_db`:
stamped, checked, a damaged file moved aside with its readable rows kept). A file is
known by its key ``(path relative to the folder, size, mtime_ns)``, so a rewritten file
is a new file. ``processed`` holds the files acknowledged ``done`` or ``failed``;
``attempts`` counts the tries at reading a file that has not been acknowledged yet, and
is committed before each try, so it survives a crash while decoding.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from edge.service.statefiles import DbKind, open_db

log = logging.getLogger("edge.sources.folder")

Key = tuple[str, int, int]  # (path relative to the folder, size, mtime_ns)


class Ledger:
    """SQLite record of processed files; safe to use from several threads."""

    KIND = DbKind(
        what="folder-source ledger", app_id=0x4350_464C,  # "CPFL"
        schema="CREATE TABLE IF NOT EXISTS processed ("
               " path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
               " status TEXT NOT NULL, reason TEXT, t REAL NOT NULL,"
               " PRIMARY KEY (path, size, mtime_ns));"
               "CREATE TABLE IF NOT EXISTS attempts ("
               " path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
               " n INTEGER NOT NULL, PRIMARY KEY (path, size, mtime_ns));",
        tables=("processed",))
    """Opened by :func:`edge.service.statefiles.open_db`: a damaged file is moved aside and its
    readable rows kept (files it lost are analysed again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._unsaved: dict[Key, int] = {}  # tries while the ledger cannot be written
        self._db = open_db(path, self.KIND, timeout=10)

    def is_processed(self, rel: str, size: int, mtime_ns: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM processed WHERE path=? AND size=? AND mtime_ns=?",
                (rel, size, mtime_ns)).fetchone()
        return row is not None

    def mark(self, entries: list[tuple[str, int, int, str, str | None]]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one transaction (the connection autocommits)
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO processed (path, size, mtime_ns, status, reason, t)"
                    " VALUES (?, ?, ?, ?, ?, ?)", [(*e, now) for e in entries])
                self._db.executemany(
                    "DELETE FROM attempts WHERE path=? AND size=? AND mtime_ns=?",
                    [e[:3] for e in entries])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def attempt(self, key: Key) -> int:
        """Count one more try at reading ``key`` (committed first); the tries so far.

        A ledger that cannot be written (a full disk) must not stop the frames: the count
        is then kept in memory only, and a crash while decoding is not remembered.
        """
        with self._lock:
            n = self._unsaved.get(key, 0) + 1
            try:
                self._db.execute(
                    "INSERT INTO attempts (path, size, mtime_ns, n) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (path, size, mtime_ns) DO UPDATE SET n = n + 1", (*key, n))
                row = self._db.execute("SELECT n FROM attempts WHERE path=? AND size=? AND "
                                       "mtime_ns=?", key).fetchone()
            except sqlite3.Error as exc:
                if not self._unsaved:
                    log.warning("folder source: %s: cannot count tries (%s); counting them in "
                                "memory until it can", self.path, exc)
                self._unsaved[key] = n
                return n
            self._unsaved.pop(key, None)
            return int(row[0])

    def read_ok(self, key: Key) -> None:
        """``key`` was read (or will be looked at again): its tries no longer count."""
        with self._lock:
            self._unsaved.pop(key, None)
            try:
                self._db.execute(
                    "DELETE FROM attempts WHERE path=? AND size=? AND mtime_ns=?", key)
            except sqlite3.Error:  # a full disk: the row goes when the file is acked
                pass

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM processed GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
