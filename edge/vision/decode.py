"""The one frame decoder: every door (sources, ``analyze``, the trainer's reader) uses it.

A frame file is checked before it is decoded, so that a hostile or broken file costs
neither memory nor a crash:

1. its size on disk (``stat``) against ``max_file_mb``: a larger file is not read;
2. its header, parsed here in pure Python (PNG ``IHDR``, JPEG ``SOF`` marker, TIFF
   ``IFD0``, BMP info header): width, height and, where cheap, channels and bit depth.
   A declared pixel count over ``max_frame_pixels`` is rejected without decoding (a
   533-byte PNG can declare 60000x60000 px); a format other than these four is refused
   (OpenCV would decode it, unchecked);
3. its end: a PNG without ``IEND``, a JPEG without its end-of-image marker, a BMP
   shorter than its pixel data is truncated (OpenCV would return a partly grey image
   with only a warning on stderr);
4. decoding with ``cv2.IMREAD_UNCHANGED``: bit depth and channels as stored (a 12-bit
   camera in a 16-bit TIFF stays uint16), EXIF orientation ignored (the flag implies
   it), OpenCV's own log silenced meanwhile. Any exception of the decoder
   (``cv2.error``, ``MemoryError``, ...) becomes a :class:`DecodeError`.

Every failure is one :class:`DecodeError` with a one-line ``reason`` (no file name: the
caller names the file) and a ``kind``. Success is a :class:`DecodedFrame`.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

MB = 1_000_000
#: frames and masks smaller than this on a side are refused (``bad_shape``): nothing a
#: crystal measurement could use fits in them
MIN_SIDE_PX = 32

DecodeErrorKind = Literal["empty", "truncated", "too_large", "unsupported", "corrupt", "io"]


class DecodeConfig(BaseModel):
    """``[decode]``: limits every frame file is checked against before it is decoded."""

    model_config = ConfigDict(extra="forbid")

    max_frame_pixels: int = Field(
        50_000_000, ge=1,
        description="largest frame (width x height, as declared in the file's header) "
                    "that is decoded; a larger one is rejected unread (default 50 Mpx, "
                    "above any microscope camera)")
    max_file_mb: float = Field(
        200.0, gt=0,
        description="largest frame file in MB (10^6 bytes) that is read; a larger one is "
                    "rejected from its size on disk")


class DecodeError(Exception):
    """A frame that cannot be used; ``reason`` is one line, ``kind`` says why."""

    def __init__(self, reason: str, *, kind: DecodeErrorKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: DecodeErrorKind = kind


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header declares."""

    format: Literal["png", "jpeg", "tiff", "bmp"]
    width: int
    height: int
    channels: int | None = None
    bit_depth: int | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass
class DecodedFrame:
    """A decoded frame: the array as stored (uint8/uint16, 1/3/4 channels) and its header."""

    image: np.ndarray
    header: ImageHeader
    n_bytes: int


# ----------------------------------------------------------------------------- headers
def _need(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise DecodeError(f"truncated {what} header", kind="truncated")
    return data


def _png_header(f: BinaryIO) -> ImageHeader:
    _need(f, 8, "PNG")
    length, tag = struct.unpack(">I4s", _need(f, 8, "PNG"))
    if tag != b"IHDR" or length < 13:
        raise DecodeError("PNG without an IHDR chunk first", kind="corrupt")
    w, h, depth, colour = struct.unpack(">IIBB", _need(f, 10, "PNG"))
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour)
    return ImageHeader("png", w, h, channels, depth)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_header(f: BinaryIO) -> ImageHeader:
    _need(f, 2, "JPEG")
    for _ in range(10_000):  # segments before the frame header (EXIF, ICC, tables...)
        byte = _need(f, 1, "JPEG")
        if byte != b"\xff":
            raise DecodeError("JPEG segment without a marker", kind="corrupt")
        marker = _need(f, 1, "JPEG")[0]
        while marker == 0xFF:  # fill bytes
            marker = _need(f, 1, "JPEG")[0]
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA):
            raise DecodeError("JPEG without a frame header (SOF) before its data",
                              kind="corrupt")
        (length,) = struct.unpack(">H", _need(f, 2, "JPEG"))
        if length < 2:
            raise DecodeError("JPEG segment of invalid length", kind="corrupt")
        if marker in _JPEG_SOF:
            depth, h, w, comps = struct.unpack(">BHHB", _need(f, 6, "JPEG"))
            return ImageHeader("jpeg", w, h, comps, depth)
        f.seek(length - 2, io.SEEK_CUR)
    raise DecodeError("JPEG with too many segments before its frame header", kind="corrupt")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8


def _tiff_header(f: BinaryIO) -> ImageHeader:
    head = _need(f, 4, "TIFF")
    e = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(e + "H", head[2:4])[0] == 43
    if big:
        _need(f, 4, "TIFF")
        (ifd,) = struct.unpack(e + "Q", _need(f, 8, "TIFF"))
    else:
        (ifd,) = struct.unpack(e + "I", _need(f, 4, "TIFF"))
    f.seek(ifd)
    count_fmt, entry_size = ("Q", 20) if big else ("H", 12)
    (n,) = struct.unpack(e + count_fmt, _need(f, struct.calcsize(count_fmt), "TIFF"))
    if n > 4096:
        raise DecodeError(f"TIFF directory of {n} entries", kind="corrupt")
    tags: dict[int, int] = {}
    for _ in range(n):
        entry = _need(f, entry_size, "TIFF")
        tag, typ = struct.unpack(e + "HH", entry[:4])
        code = _TIFF_TYPES.get(typ)
        if tag in (256, 257, 258, 277) and code is not None:
            value_at = 12 if big else 8  # the first value is stored inline at this offset
            tags[tag] = struct.unpack(e + code, entry[value_at:value_at + struct.calcsize(code)])[0]
    if 256 not in tags or 257 not in tags:
        raise DecodeError("TIFF without ImageWidth/ImageLength", kind="corrupt")
    channels = tags.get(277, 1)
    depth = tags.get(258) if channels <= 2 else None  # several values: stored elsewhere
    return ImageHeader("tiff", tags[256], tags[257], channels, depth)


def _bmp_header(f: BinaryIO) -> ImageHeader:
    head = _need(f, 18, "BMP")
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:
        w, h, _planes, bpp = struct.unpack("<HHHH", _need(f, 8, "BMP"))
    elif dib >= 40:
        w, h, _planes, bpp = struct.unpack("<iiHH", _need(f, 12, "BMP"))
    else:
        raise DecodeError(f"BMP with an unknown info header of {dib} bytes", kind="corrupt")
    return ImageHeader("bmp", abs(w), abs(h), 4 if bpp == 32 else 3, 8)


_SIGNATURES: tuple[tuple[bytes, object], ...] = (
    (b"\x89PNG\r\n\x1a\n", _png_header),
    (b"\xff\xd8", _jpeg_header),
    (b"II*\x00", _tiff_header), (b"MM\x00*", _tiff_header),
    (b"II+\x00", _tiff_header), (b"MM\x00+", _tiff_header),
    (b"BM", _bmp_header),
)


def read_header(f: BinaryIO) -> ImageHeader:
    """Width, height (channels, bit depth where cheap) from the start of an image file.

    ``f`` is positioned at the start; it is read (and seeked) only as far as the header.
    Raises :class:`DecodeError` for an unknown format or a malformed header.
    """
    start = f.read(8)
    if not start:
        raise DecodeError("empty file", kind="empty")
    for sig, parse in _SIGNATURES:
        if start.startswith(sig):
            f.seek(0)
            header: ImageHeader = parse(f)  # type: ignore[operator]
            if header.width <= 0 or header.height <= 0:
                raise DecodeError(f"{header.format.upper()} header declares "
                                  f"{header.width}x{header.height} px", kind="corrupt")
            return header
    raise DecodeError("not an image file (not PNG, JPEG, TIFF or BMP)", kind="unsupported")


def check_header(header: ImageHeader, config: DecodeConfig) -> None:
    """DecodeError when the declared frame is larger than ``max_frame_pixels``."""
    if header.pixels > config.max_frame_pixels:
        raise DecodeError(
            f"{header.width}x{header.height} px ({header.pixels / 1e6:.1f} Mpx) declared in "
            f"the {header.format.upper()} header is over the limit of "
            f"{config.max_frame_pixels / 1e6:g} Mpx (max_frame_pixels)", kind="too_large")


def check_file_size(n_bytes: int, config: DecodeConfig) -> None:
    """DecodeError when a file of ``n_bytes`` is larger than ``max_file_mb``."""
    if n_bytes > config.max_file_mb * MB:
        raise DecodeError(f"{n_bytes / MB:.1f} MB is over the limit of "
                          f"{config.max_file_mb:g} MB (max_file_mb)", kind="too_large")


_PNG_END = b"IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"


def check_complete(data: bytes, fmt: str) -> str | None:
    """Cheap end-of-file check; a reason string when ``data`` is truncated.

    ``fmt`` is a header format (``"png"``, ``"jpeg"``, ``"bmp"``) or a file suffix.
    """
    s = fmt.lower().lstrip(".")
    if s == "png" and not data.rstrip(b"\x00").endswith(_PNG_END):
        return "truncated PNG (no IEND chunk)"
    if s in ("jpeg", "jpg") and _JPEG_EOI not in data[-64:]:
        return "truncated JPEG (no end-of-image marker)"
    if s == "bmp" and len(data) >= 34:
        offset, dib = struct.unpack("<II", data[10:18])
        if dib >= 40:
            w, h, _planes, bpp, compression = struct.unpack("<iiHHI", data[18:34])
            row = ((bpp * abs(w) + 31) // 32) * 4
            if compression == 0 and len(data) < offset + row * abs(h):
                return "truncated BMP (shorter than its pixel data)"
    return None


# ----------------------------------------------------------------------------- decoding
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: int | None = None


@contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV's log level silent while any thread decodes (restored by the last one).

    OpenCV's own log is switched off instead of redirecting file descriptor 2, which
    would swallow the service's log lines from other threads meanwhile.
    """
    global _quiet_depth, _quiet_saved
    cvlog = getattr(getattr(cv2, "utils", None), "logging", None)
    if cvlog is None:
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = cvlog.getLogLevel()
            cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                cvlog.setLogLevel(_quiet_saved)


def _short(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {text}"[:200]


def decode_bytes(data: bytes, *, config: DecodeConfig | None = None) -> DecodedFrame:
    """Check and decode an image file's bytes (see the module docstring).

    Raises
    ------
    DecodeError
        Empty, too large, truncated, not an image, or refused by the decoder.
    """
    config = config or DecodeConfig()
    check_file_size(len(data), config)
    header = read_header(io.BytesIO(data))
    check_header(header, config)
    truncated = check_complete(data, header.format)
    if truncated:
        raise DecodeError(truncated, kind="truncated")
    try:
        with _opencv_quiet():
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception as exc:  # cv2.error, MemoryError, ...: whatever the decoder raises
        raise DecodeError(f"the decoder failed: {_short(exc)}", kind="corrupt") from None
    if image is None or image.size == 0:
        raise DecodeError(f"cannot decode this {header.format.upper()} (corrupt or an "
                          f"unsupported variant)", kind="corrupt")
    if image.shape[:2] != header.hw:
        raise DecodeError(f"decoded {image.shape[1]}x{image.shape[0]} px, but the header "
                          f"declares {header.width}x{header.height}", kind="corrupt")
    return DecodedFrame(image=image, header=header, n_bytes=len(data))


def probe_file(path: str | Path, *, config: DecodeConfig | None = None) -> ImageHeader:
    """The header of a frame file within the limits, without decoding it.

    Raises
    ------
    DecodeError
        As :func:`decode_file` would for the size, the header or an OS error.
    """
    config = config or DecodeConfig()
    try:
        check_file_size(os.stat(path).st_size, config)
        with open(path, "rb") as f:
            header = read_header(f)
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}", kind="io") from None
    check_header(header, config)
    return header


def decode_file(path: str | Path, *, config: DecodeConfig | None = None) -> DecodedFrame:
    """Check and decode a frame file: stat size, header and caps before reading it whole.

    Raises
    ------
    DecodeError
        As :func:`decode_bytes`; ``kind="io"`` when the file cannot be read.
    """
    config = config or DecodeConfig()
    try:
        with open(path, "rb") as f:
            check_file_size(os.fstat(f.fileno()).st_size, config)
            check_header(read_header(f), config)
            f.seek(0)
            data = f.read(int(config.max_file_mb * MB) + 1)  # it may have grown meanwhile
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}", kind="io") from None
    return decode_bytes(data, config=config)
