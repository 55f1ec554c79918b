"""Which image files a watched folder holds: name patterns, subfolders, links out of it.

Pure functions over the file system (no state): :func:`scan` lists the candidate files
with their ``(size, mtime_ns)``, and apart from them every symbolic link that resolves
outside the folder (the folder source refuses those instead of following them).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("edge.sources.folder")

Signature = tuple[int, int]  # (size, mtime_ns)


def wanted(name: str, *, patterns: Sequence[str], ignore: Sequence[str]) -> bool:
    """True when ``name`` matches a pattern and no ignore pattern (case-insensitive)."""
    low = name.lower()
    if any(fnmatch.fnmatchcase(low, p.lower()) for p in ignore):
        return False
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def inside(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` (links resolved) lies inside ``root`` (links resolved)."""
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def scan(root: Path, *, patterns: Sequence[str], ignore: Sequence[str], recursive: bool
         ) -> tuple[dict[str, Signature], dict[str, Signature]]:
    """``(candidates, outside)``: relative path -> (size, mtime_ns) of every candidate file
    now present, and of every link that resolves outside ``root``."""
    found: dict[str, Signature] = {}
    outside: dict[str, Signature] = {}
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as exc:
            log.warning("folder source: cannot list %s: %s", d, exc)
            continue
        for e in entries:
            try:
                ok = wanted(e.name, patterns=patterns, ignore=ignore)
                if e.is_symlink() and not inside(e.path, root):
                    if ok or (recursive and e.is_dir()):
                        st = e.stat(follow_symlinks=False)
                        outside[os.path.relpath(e.path, root)] = (st.st_size, st.st_mtime_ns)
                    continue
                if e.is_dir(follow_symlinks=False):
                    if recursive and not e.name.startswith("."):
                        stack.append(Path(e.path))
                    continue
                if not e.is_file() or not ok:
                    continue
                st = e.stat()
            except OSError:
                continue  # vanished between listing and stat
            found[os.path.relpath(e.path, root)] = (st.st_size, st.st_mtime_ns)
    return found, outside
