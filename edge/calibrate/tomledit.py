"""Put a calibration into a configuration file, keeping its comments and layout.

Only three keys of the ``[optics]`` table change: ``px_size_um``, ``calibrated_at`` (a
TOML UTC date-time) and ``calibration`` (what it came from). An existing key's line is
rewritten in place, its trailing comment kept; a missing key is added after the table's
last key; a missing table is added at the end. Every other line stays byte for byte.
The result is checked to parse to exactly the values written, then validated as a whole
configuration (:func:`edge.service.config.load_config`) before it replaces the file.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

_HEADER = re.compile(r"^\s*\[\s*optics\s*\]\s*(#.*)?$")
_ANY_TABLE = re.compile(r"^\s*\[")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _toml(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(rest: str) -> str:
    """The trailing comment of ``rest`` (what follows ``key =``), with its spacing: the
    first ``#`` after which the text before it parses as one TOML value."""
    for i, ch in enumerate(rest):
        if ch == "#":
            try:
                tomllib.loads("k =" + rest[:i])
            except tomllib.TOMLDecodeError:
                continue
            return rest[len(rest[:i].rstrip()):]
    return ""


def _optics_span(lines: list[str]) -> tuple[int, int] | None:
    """(header index, end index) of the ``[optics]`` table, or None."""
    for i, line in enumerate(lines):
        if _HEADER.match(line):
            end = next((j for j in range(i + 1, len(lines)) if _ANY_TABLE.match(lines[j])),
                       len(lines))
            return i, end
    return None


def set_optics(text: str, values: dict[str, Any]) -> str:
    """``text`` (a TOML file) with ``values`` set in its ``[optics]`` table."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    span = _optics_span(lines)
    if span is None:
        sep = "\n" if lines and lines[-1].strip() else ""
        lines.append(f"{sep}[optics]\n")
        span = (len(lines) - 1, len(lines))
    start, end = span
    last_key = start
    todo = dict(values)
    for j in range(start + 1, end):
        m = _KEY.match(lines[j])
        if not m:
            continue
        last_key = j
        if m.group(1) in todo:
            key = m.group(1)
            indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
            rest = lines[j][m.end():].rstrip("\n")
            lines[j] = f"{indent}{key} = {_toml(todo.pop(key))}{_comment(rest)}\n"
    new = [f"{k} = {_toml(v)}\n" for k, v in todo.items()]
    lines[last_key + 1:last_key + 1] = new
    return "".join(lines)


def write_config(path: str | Path, px_size_um: float, calibration: str,
                 *, now: datetime | None = None) -> None:
    """Set ``[optics] px_size_um``, ``calibrated_at`` and ``calibration`` in the file
    ``path`` (created when missing), atomically, after checking the result loads.

    Raises
    ------
    UserError
        The file cannot be read or written, or the edited file would not load (the
        message names the file; the file is left as it was).
    """
    from edge.service.config import load_config

    p = Path(path)
    now = now or datetime.now(timezone.utc)
    values: dict[str, Any] = {"px_size_um": float(f"{px_size_um:.6g}"),
                              "calibrated_at": now.replace(microsecond=0),
                              "calibration": calibration}
    try:
        text = p.read_text(encoding="utf-8") if p.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: cannot read the configuration: {exc}") from None
    out = set_optics(text, values)
    try:
        optics = tomllib.loads(out).get("optics", {})
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: cannot edit [optics] in this file ({exc}); set "
                        f"px_size_um = {values['px_size_um']} by hand") from None
    if optics.get("px_size_um") != values["px_size_um"]:
        raise UserError(f"{p}: [optics] is written in a form this edit does not handle; "
                        f"set px_size_um = {values['px_size_um']} by hand")
    _replace_checked(p, out, load_config)


def _replace_checked(p: Path, text: str, load: Any) -> None:
    """Write ``text`` beside ``p``, ``load`` it (a UserError names ``p``), then move it
    over ``p`` keeping ``p``'s permissions."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp",
                                   dir=p.resolve().parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UserError(f"{p}: cannot write beside the configuration: {exc}") from None
    try:
        try:
            load(tmp)
        except UserError as exc:
            msg = str(exc).replace(tmp, str(p))
            raise UserError(f"{msg} (the file is left unchanged)") from None
        if p.exists():
            os.chmod(tmp, p.stat().st_mode & 0o7777)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
