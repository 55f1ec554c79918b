"""The inputs of ``crystal-edge analyze``, shared by its two modes (not a command).

Finding the files (:func:`expand_inputs`), reading them unchanged with the service's
decoder and limits (:func:`decode_image`, :func:`decode_config_from_args`), and the one
stderr line per skipped input (:func:`warn_skipped`). The masks mode
(:mod:`edge.commands.analyze_masks`) and the image mode
(:mod:`edge.commands.analyze_images`) both import it; it imports neither.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edge.errors import UserError

#: File types scanned for in directories (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")


def validated(model: type, fields: dict[str, Any], options: dict[str, str]) -> Any:
    """``model(**fields)``; a validation error becomes a UserError naming the option
    (``options``: field name -> command-line option)."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        opt = options.get(name, name)
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UserError(f"{opt}: {msg}") from None


def decode_config_from_args(args: argparse.Namespace) -> Any:
    """:class:`edge.vision.decode.DecodeConfig` from ``--max-frame-pixels``/``--max-file-mb``."""
    from edge.vision.decode import DecodeConfig

    fields = {k: getattr(args, k, None) for k in ("max_frame_pixels", "max_file_mb")}
    return validated(DecodeConfig, {k: v for k, v in fields.items() if v is not None},
                     {k: "--" + k.replace("_", "-") for k in fields})


def expand_inputs(paths: Iterable[str],
                  extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[tuple[str, str | None]]:
    """Files named or found in directories, as ``(name, error)`` in order.

    Directories contribute their image files (by extension, sorted by name, not
    recursive); a directory without any, or a path that does not exist, becomes one
    entry with the error. Files are returned whatever their extension (decoding decides).
    """
    out: list[tuple[str, str | None]] = []
    exts = tuple(e.lower() for e in extensions)
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(c for c in p.iterdir()
                           if c.is_file() and c.suffix.lower() in exts)
            if not found:
                out.append((raw, "directory contains no image files ("
                                 + ", ".join(e.lstrip(".") for e in exts) + ")"))
            out.extend((str(c), None) for c in found)
        elif p.is_file():
            out.append((raw, None))
        elif p.exists():
            out.append((raw, "not a regular file"))
        else:
            out.append((raw, "no such file or directory"))
    return out


def decode_image(path: str | Path, config: Any = None) -> Any:
    """Read an image file unchanged (bit depth, channels) with :mod:`edge.vision.decode`
    and the limits of ``config`` (:class:`edge.vision.decode.DecodeConfig`); UserError
    naming the file."""
    from edge.vision.decode import DecodeError, decode_file

    try:
        return decode_file(path, config=config).image
    except DecodeError as exc:
        raise UserError(f"{path}: {exc.reason}") from None


def error_text(name: str, exc: BaseException) -> str:
    """The message of an error about input ``name``, without the leading ``name: ``."""
    return str(exc).removeprefix(f"{name}: ")


def warn_skipped(name: str, reason: str) -> None:
    """One line on stderr for an input that is skipped (the run goes on)."""
    print(f"crystal-edge: warning: {name}: {reason} (skipped)", file=sys.stderr)
