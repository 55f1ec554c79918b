"""Where the segmentation model is found when a relative path names it.

A relative model path (the default ``models/crystal-seg.onnx`` included) is looked up,
in this order, and the first existing file wins:

1. relative to ``base`` (the configuration file's folder) or the working directory;
2. relative to the source tree the package is imported from (a checkout or an editable
   install);
3. relative to the release the virtual environment lies in (``make deploy`` puts the venv
   at ``<release>/venv`` beside the release's ``models/``);
4. ``<sys.prefix>/share/crystal-psd/``.

When none exists the path relative to ``base`` comes back, so the error names the place a
user reads in the configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MODEL = Path("models/crystal-seg.onnx")
"""The shipped model, relative to the project or release root."""


def shipped_roots() -> list[Path]:
    """Folders a relative model path is also looked up in (steps 2-4 above)."""
    package_root = Path(__file__).resolve().parent.parent
    prefix = Path(sys.prefix).resolve()
    return [package_root, prefix.parent, prefix / "share" / "crystal-psd"]


def locate_model(path: str | Path, *, base: str | Path | None = None,
                 roots: Sequence[Path] | None = None) -> Path:
    """The model file that ``path`` names.

    Parameters
    ----------
    path : str or Path
        As written by the user (``--model``, ``[model] path``) or the default.
    base : str or Path, optional
        Folder relative paths are read against first (the configuration file's folder);
        default the working directory.
    roots : sequence of Path, optional
        The further folders to look in; default :func:`shipped_roots`.

    Returns
    -------
    Path
        An absolute path for an absolute ``path``; otherwise the first existing candidate,
        or ``base / path`` when none exists.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    first = (Path(base) if base is not None else Path.cwd()) / p
    if first.is_file():
        return first
    for root in (shipped_roots() if roots is None else roots):
        candidate = Path(root) / p
        if candidate.is_file():
            return candidate
    return first
