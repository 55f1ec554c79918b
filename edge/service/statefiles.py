"""State files that must open after any crash: recognised, checked, or moved aside.

The service keeps its memory in the state directory (``outbox.sqlite3``,
``folder_source.sqlite3``, ``batch_counter.json``, ``sparkplug_bdseq.json``,
``frame_size.json``). A power cut, a full disk or a person's mistake can leave such a file
empty, cut short, or replaced by something else. None of that may stop the appliance, and
none of it may pass unnoticed. Every state file is therefore opened here:

* :func:`open_db` opens an SQLite database of one :class:`DbKind`. Its
  ``PRAGMA application_id`` is stamped on creation and checked on every open. A zero-byte
  file, a file that is not SQLite, a foreign ``application_id`` (or foreign tables) or one
  that fails ``PRAGMA quick_check`` is moved aside as ``NAME.corrupt-<UTC time>`` (with
  its ``-wal``/``-shm`` files, so the moved copy still opens), the rows still readable in
  it are copied into a fresh database, one ERROR line names the file, the reason and what
  was kept, and the service carries on. A file of the previous version of this product
  (no ``application_id`` yet, but the expected tables) is adopted and stamped.
* :func:`read_json_state` reads a small JSON file; unparsable or of the wrong shape, it
  is moved aside the same way and the caller falls back to its default.

Nothing is ever deleted. Every recovery is an :class:`Incident` in a process-wide
registry (:func:`incidents`), which the health snapshot carries (``status.json``, MQTT
health, ``crystal-edge status``). Errors that are not the file's fault (a locked
database, a read-only or failing disk) raise :class:`~edge.errors.TransientError`: exit
status 1, and systemd starts the service again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from edge.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_INCIDENTS = 50
"""Incidents kept in memory (the newest); a person needs the first few, not thousands."""

_NOT_CORRUPTION = ("locked", "busy", "unable to open", "readonly", "read-only",
                   "disk i/o", "out of memory", "full")
"""SQLite messages that describe the machine, not the file: never a reason to move it."""


@dataclass(frozen=True)
class Incident:
    """One state file found unusable and replaced (health: ``state_file_incidents``)."""

    file: str
    reason: str
    moved_to: str | None
    time: str
    kept: str = ""


_lock = threading.Lock()
_incidents: list[Incident] = []


def incidents() -> list[dict[str, Any]]:
    """The recoveries since this process started, oldest first, as plain JSON."""
    with _lock:
        return [asdict(i) for i in _incidents]


def _record(incident: Incident) -> None:
    with _lock:
        _incidents.append(incident)
        del _incidents[:-MAX_INCIDENTS]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def move_aside(path: Path, *, sidecars: tuple[str, ...] = ()) -> Path | None:
    """Rename ``path`` to ``NAME.corrupt-<UTC time>`` beside it (never deleted).

    ``sidecars`` (e.g. ``("-wal", "-shm")``) are moved with it under matching names, so
    the moved database still opens with its journal. Returns the new path, or None when
    the rename failed (the reason is logged).
    """
    stamp = _utc_now().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        log.error("%s: cannot move the unusable file aside: %s", path, exc.strerror or exc)
        return None
    for suffix in sidecars:
        side = path.with_name(path.name + suffix)
        if side.exists():
            try:
                os.replace(side, target.with_name(target.name + suffix))
            except OSError as exc:  # the main file is out of the way: carry on
                log.warning("%s: cannot move %s aside: %s", path, side.name, exc)
    return target


def _report(path: Path, what: str, reason: str, moved: Path | None, *, kept: str,
            then: str) -> Incident:
    where = f"moved aside to {moved.name}" if moved else "could not be moved aside"
    kept_txt = f"; {kept}" if kept else ""
    log.error("%s: %s unusable (%s); %s%s; %s", path, what, reason, where, kept_txt, then)
    incident = Incident(file=str(path), reason=reason,
                        moved_to=str(moved) if moved else None,
                        time=_utc_now().isoformat(timespec="seconds"), kept=kept)
    _record(incident)
    return incident


# ---------------------------------------------------------------------- JSON files
def read_json_state(path: str | Path, parse: Callable[[Any], T], *, what: str,
                    then: str) -> tuple[T | None, Incident | None]:
    """Read one JSON state file through ``parse`` (raises ValueError/KeyError/TypeError
    on a wrong shape).

    Returns ``(value, None)``; ``(None, None)`` when the file does not exist; ``(None,
    incident)`` when it was unusable: then it has been moved aside, one ERROR line says
    ``what`` it was and ``then`` what the caller does instead, and the incident is
    recorded (``incident.moved_to`` lets the caller look for what is still legible).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        reason = f"unreadable: {exc.strerror or exc}"
    else:
        try:
            return parse(json.loads(raw)), None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            reason = ("empty file (0 bytes)" if not raw
                      else f"{type(exc).__name__}: {str(exc)[:120]}")
    return None, _report(path, what, reason, move_aside(path), kept="", then=then)


# ---------------------------------------------------------------------- SQLite files
@dataclass(frozen=True)
class DbKind:
    """One kind of state database.

    Parameters
    ----------
    what : str
        Name in log lines ("MQTT outbox").
    app_id : int
        ``PRAGMA application_id`` of this kind (signed 32 bit, distinct per kind).
    schema : str
        Idempotent DDL (``CREATE TABLE IF NOT EXISTS``), run on every open.
    tables : tuple of str
        The tables of this kind; an unstamped file with all of them is adopted, and their
        readable rows are copied out of a moved-aside file.
    """

    what: str
    app_id: int
    schema: str
    tables: tuple[str, ...]


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=timeout)


def _is_machine_fault(exc: sqlite3.Error) -> bool:
    return any(m in str(exc).lower() for m in _NOT_CORRUPTION)


def _user_tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")}


def _problem(path: Path, kind: DbKind, timeout: float) -> str | None:
    """Why ``path`` cannot be used as ``kind`` (None: usable, adopted or new)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return "not an SQLite database"
    db = _connect(path, timeout)
    try:
        app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        tables = _user_tables(db)
        if app_id not in (0, kind.app_id):
            return f"foreign database (application_id {app_id:#x}, expected {kind.app_id:#x})"
        if app_id == 0 and tables and not set(kind.tables) <= tables:
            return f"foreign database (tables {', '.join(sorted(tables))})"
        check = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)").fetchall()]
        if check != ["ok"]:
            return "failed quick_check: " + "; ".join(check)[:200]
    except sqlite3.Error as exc:
        if _is_machine_fault(exc):
            raise
        return f"{type(exc).__name__}: {exc}"
    finally:
        db.close()
    return None


def _copy_rows(old: sqlite3.Connection, new: sqlite3.Connection, table: str) -> int:
    """Copy what can be read of ``table`` (from both ends: a cut file keeps its start and
    a damaged page may hide the middle); returns the rows copied."""
    cols = [str(r[1]) for r in new.execute(f"PRAGMA table_info({table})").fetchall()]
    names = ", ".join(cols)
    marks = ", ".join("?" * len(cols))
    copied: set[int] = set()
    for order in ("ASC", "DESC"):
        try:
            cur = old.execute(f"SELECT rowid, {names} FROM {table} ORDER BY rowid {order}")
            for row in cur:
                if row[0] in copied:
                    break
                # OR IGNORE also skips what a zeroed page reads as: a row of NULLs
                if new.execute(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})",
                               row[1:]).rowcount == 1:
                    copied.add(row[0])
        except sqlite3.Error:
            continue
    return len(copied)


def _last_autoincrement(db: sqlite3.Connection, table: str) -> str:
    """``; ids ran up to N`` from ``sqlite_sequence`` (an early page of the file, often
    still legible when the table's own pages are cut off), else ``""``."""
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
    except sqlite3.Error:
        return ""
    return f"; ids ran up to {int(row[0])}" if row else ""


def _salvage(moved: Path, new: sqlite3.Connection, kind: DbKind, timeout: float) -> str:
    """Copy the readable rows of ``moved`` into ``new``; a note for the ERROR line."""
    notes = []
    try:
        old = _connect(moved, timeout)
    except sqlite3.Error:
        return "nothing could be read from it"
    try:
        # read past SQLite's "file shorter than its header says" refusal; nothing is written
        old.execute("PRAGMA writable_schema=ON")
        if not set(kind.tables) <= _user_tables(old):
            return "nothing could be read from it"
        main = kind.tables[0]
        try:
            held = int(old.execute(f"SELECT COUNT(*) FROM {main}").fetchone()[0])
        except sqlite3.Error:
            held = None
        last_id = _last_autoincrement(old, main) if held is None else None
        new.execute("BEGIN IMMEDIATE")
        for table in kind.tables:
            n = _copy_rows(old, new, table)
            if table == main:
                of = (f" of {held}" if held is not None else
                      f" (how many it held is unreadable{last_id})")
                notes.append(f"{n}{of} {table} row(s) recovered into the new file")
        new.execute("COMMIT")
    except sqlite3.Error as exc:
        if new.in_transaction:
            new.execute("ROLLBACK")
        return f"nothing could be read from it ({exc})"
    finally:
        old.close()
    return "; ".join(notes)


def _create(path: Path, kind: DbKind, timeout: float) -> sqlite3.Connection:
    existed = path.exists()
    db = _connect(path, timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(kind.schema)
    if int(db.execute("PRAGMA application_id").fetchone()[0]) != kind.app_id:
        if existed:
            log.info("%s: %s of an earlier version adopted (application_id stamped)",
                     path, kind.what)
        db.execute(f"PRAGMA application_id = {int(kind.app_id)}")
    return db


def open_db(path: str | Path, kind: DbKind, *, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (creating, adopting or replacing) a state database of ``kind``.

    The connection is in autocommit mode (``isolation_level=None``), WAL journal,
    ``synchronous=FULL``, usable from several threads (callers hold their own lock).
    Raises :class:`~edge.errors.TransientError` when the machine, not the file, is at
    fault (locked by another process, read-only or failing disk).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        reason = _problem(path, kind, timeout)
        moved = None
        if reason is not None:
            moved = move_aside(path, sidecars=("-wal", "-shm", "-journal"))
            if moved is None:
                raise TransientError(f"{path}: {kind.what} unusable ({reason}) and it "
                                     "cannot be moved aside")
        db = _create(path, kind, timeout)
        if reason is not None:
            kept = _salvage(moved, db, kind, timeout) if moved else ""
            _report(path, kind.what, reason, moved, kept=kept, then="started a new one")
        return db
    except sqlite3.Error as exc:
        raise TransientError(f"{path}: cannot open the {kind.what}: {exc}") from None
    except OSError as exc:
        raise TransientError(f"{path}: cannot open the {kind.what}: "
                             f"{exc.strerror or exc}") from None
