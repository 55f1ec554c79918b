"""The one frame decoder: header parsing, limits before decoding, typed rejections."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.vision.decode import (
    DecodeConfig,
    DecodeError,
    decode_bytes,
    decode_file,
    probe_file,
    read_header,
)


# ------------------------------------------------------------------ crafted files
def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def crafted_png(width: int, height: int, size: int = 533) -> bytes:
    """A valid-looking grey PNG of ``size`` bytes whose header declares width x height
    (its data holds only the first rows): a decompression bomb's header."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 0, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0" * 20_000, 9))
    iend = _chunk(b"IEND", b"")
    pad = size - len(head) - len(idat) - len(iend) - 12
    assert pad >= 2
    return head + _chunk(b"tEXt", b"c\0" + b"x" * (pad - 2)) + idat + iend


def big_png(path: Path, side: int = 8000) -> Path:
    """A real side x side grey PNG (8000 px: about 76 KB; it compresses well)."""
    img = np.zeros((side, side), np.uint8)
    img[::97, :] = 200
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


def _with_exif_orientation(jpeg: bytes, orientation: int = 6, pad: int = 40_000) -> bytes:
    """``jpeg`` with an EXIF APP1 (orientation tag) and a large APP2 before its SOF."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, orientation) + b"\0" * 4
    exif = b"Exif\0\0" + b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    app2 = b"\xff\xe2" + struct.pack(">H", pad + 2) + b"\x11" * pad
    return jpeg[:2] + app1 + app2 + jpeg[2:]


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)


# ------------------------------------------------------------------ headers
@pytest.mark.parametrize("ext, fmt", [(".png", "png"), (".jpg", "jpeg"), (".tif", "tiff"),
                                      (".bmp", "bmp")])
def test_header_of_real_files(tmp_path, frame, ext, fmt):
    path = tmp_path / f"f{ext}"
    assert cv2.imwrite(str(path), frame)
    with open(path, "rb") as f:
        h = read_header(f)
    assert (h.format, h.width, h.height) == (fmt, 40, 30)
    assert h.channels == 3
    got = decode_file(path)
    assert got.image.shape == (30, 40, 3) and got.image.dtype == np.uint8
    assert got.header == h and probe_file(path) == h


def test_grey_and_16_bit_headers(tmp_path):
    grey = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    for ext in (".png", ".tif"):
        assert cv2.imwrite(str(tmp_path / f"g{ext}"), grey)
        h = probe_file(tmp_path / f"g{ext}")
        assert (h.width, h.height, h.channels, h.bit_depth) == (40, 30, 1, 16)
    assert cv2.imwrite(str(tmp_path / "g.jpg"), (grey % 256).astype(np.uint8))
    h = probe_file(tmp_path / "g.jpg")
    assert (h.channels, h.bit_depth) == (1, 8)


def test_big_endian_tiff_header():
    entries = [(256, 3, 1, 640 << 16), (257, 4, 1, 480), (258, 3, 1, 16 << 16),
               (277, 3, 1, 1 << 16)]
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries)
    h = read_header(io.BytesIO(b"MM\x00*" + struct.pack(">I", 8) + ifd + b"\0" * 4))
    assert (h.format, h.width, h.height, h.bit_depth, h.channels) == ("tiff", 640, 480, 16, 1)


def test_jpeg_header_after_large_exif_and_orientation_ignored(frame):
    _ok, buf = cv2.imencode(".jpg", frame[:, :20])  # 20 wide, 30 high
    data = _with_exif_orientation(buf.tobytes())
    h = read_header(io.BytesIO(data))
    assert (h.width, h.height) == (20, 30)
    # EXIF orientation 6 would rotate it to 30x20: the decoder keeps the stored pixels
    assert decode_bytes(data).image.shape == (30, 20, 3)


def test_sixteen_bit_tiff_keeps_its_depth(tmp_path):
    twelve = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 4096).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "t.tif"), twelve)
    img = decode_file(tmp_path / "t.tif").image
    assert img.dtype == np.uint16 and img.shape == (48, 64)
    np.testing.assert_array_equal(img, twelve)


# ------------------------------------------------------------------ limits
def test_crafted_png_declaring_60000x60000_is_rejected_from_its_header(tmp_path, monkeypatch):
    data = crafted_png(60000, 60000)
    assert len(data) == 533
    path = tmp_path / "bomb.png"
    path.write_bytes(data)

    def no_decoding(*_a, **_k):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    for call in (lambda: decode_file(path), lambda: decode_bytes(data), lambda: probe_file(path)):
        with pytest.raises(DecodeError) as err:
            call()
        assert err.value.kind == "too_large"
        assert "60000x60000 px" in err.value.reason and "max_frame_pixels" in err.value.reason


def test_8000x8000_png_over_the_default_cap_and_decoded_under_a_higher_one(tmp_path):
    path = big_png(tmp_path / "big.png")
    assert path.stat().st_size < 200_000
    with pytest.raises(DecodeError, match=r"8000x8000 px .*\(max_frame_pixels\)") as err:
        decode_file(path)
    assert err.value.kind == "too_large"
    got = decode_file(path, config=DecodeConfig(max_frame_pixels=64_000_000))
    assert got.image.shape == (8000, 8000) and got.image.dtype == np.uint8


def test_file_over_max_file_mb_is_rejected_from_its_size_unread(tmp_path):
    path = tmp_path / "huge.tif"
    with open(path, "wb") as f:  # sparse: no disk used
        f.write(b"II*\x00")
        f.truncate(201 * 1_000_000)
    t0 = time.perf_counter()
    for call in (decode_file, probe_file):
        with pytest.raises(DecodeError, match=r"201\.0 MB is over the limit of 200 MB") as err:
            call(path)
        assert err.value.kind == "too_large"
    assert time.perf_counter() - t0 < 0.5  # a read of 201 MB would take longer


def test_config_is_validated():
    with pytest.raises(ValidationError):
        DecodeConfig(max_frame_pixels=0)
    with pytest.raises(ValidationError):
        DecodeConfig(max_file_mb=1, unknown=2)


# ------------------------------------------------------------------ broken files
@pytest.mark.parametrize("ext, reason", [(".png", "truncated PNG"), (".jpg", "truncated JPEG"),
                                         (".bmp", "truncated BMP")])
def test_truncated_files(tmp_path, frame, ext, reason):
    _ok, buf = cv2.imencode(ext, frame)
    data = buf.tobytes()[: len(buf) * 2 // 3]
    with pytest.raises(DecodeError, match=reason) as err:
        decode_bytes(data)
    assert err.value.kind == "truncated"


@pytest.mark.parametrize("data, kind, text", [
    (b"", "empty", "empty file"),
    (b"hello, this is text\n", "unsupported", "not an image file"),
    (b"\x89PNG\r\n\x1a\n garbage", "corrupt", "IHDR"),
    (b"\xff\xd8\xff\xda\x00\x02", "corrupt", "SOF"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated", "truncated PNG header"),
])
def test_not_images(data, kind, text):
    with pytest.raises(DecodeError, match=text) as err:
        decode_bytes(data)
    assert err.value.kind == kind


def test_decoder_exceptions_become_rejections(frame, monkeypatch):
    _ok, buf = cv2.imencode(".png", frame)

    def exploding(*_a, **_k):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(cv2, "imdecode", exploding)
    with pytest.raises(DecodeError, match="decoder failed: MemoryError") as err:
        decode_bytes(buf.tobytes())
    assert err.value.kind == "corrupt"


def test_corrupt_data_behind_a_valid_header(frame):
    _ok, buf = cv2.imencode(".png", frame)
    data = bytearray(buf.tobytes())
    data[60:200] = os.urandom(140)  # inside IDAT; IEND still there
    with pytest.raises(DecodeError) as err:
        decode_bytes(bytes(data))
    assert err.value.kind == "corrupt"


def test_unreadable_path(tmp_path):
    with pytest.raises(DecodeError, match="cannot read") as err:
        decode_file(tmp_path / "missing.png")
    assert err.value.kind == "io"
