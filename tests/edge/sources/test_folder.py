"""Folder source: real image files written by OpenCV into a watched directory."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.errors import UserError
from edge.sources.folder import FolderSource, FolderSourceConfig
from tests.edge.sources.helpers import Collector


def _img(value: int, h: int = 24, w: int = 32) -> np.ndarray:
    img = np.full((h, w, 3), value, np.uint8)
    img[2:6, 3:9] = 255 - value
    return img


def _write(path: Path, value: int, mtime: float | None = None) -> Path:
    assert cv2.imwrite(str(path), _img(value))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _source(tmp_path: Path, **kw) -> FolderSource:
    watch = tmp_path / "in"
    watch.mkdir(exist_ok=True)
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    cfg = FolderSourceConfig(path=watch, poll_s=0.05, **kw)
    src = FolderSource(cfg, state_dir=state)
    src.open()
    return src


def test_arrival_order_once_and_ignored_names(tmp_path):
    src = _source(tmp_path)
    watch = src.dir
    t0 = time.time() - 100
    _write(watch / "b.png", 20, t0 + 1)
    _write(watch / "a.png", 10, t0 + 2)      # newer than b: after b despite the name
    _write(watch / "c.jpg", 30, t0 + 2)      # same mtime as a: name decides
    _write(watch / ".hidden.png", 40, t0)
    _write(watch / "partial.png", 50, t0)
    os.replace(watch / "partial.png", watch / "partial.png.tmp")  # still being copied
    (watch / "y.png.part").write_bytes(b"half")
    (watch / "notes.txt").write_text("not an image")
    col = Collector(src)
    frames = col.wait_frames(3)
    time.sleep(0.3)  # several more polls: nothing is yielded twice
    col.close()
    assert [f.name for f in col.frames] == ["b.png", "a.png", "c.jpg"]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert all(f.error is None and f.image.shape == (24, 32, 3) for f in frames)
    assert int(frames[1].image[0, 0, 0]) == 10
    assert src.health()["in_flight"] == 3
    assert col.beats >= 3  # idle scans are reported as heartbeats


def test_half_written_file_waits_until_stable(tmp_path):
    src = _source(tmp_path, stable_polls=2)
    path = src.dir / "grow.png"
    _ok, buf = cv2.imencode(".png", _img(90, 64, 64))
    data = buf.tobytes()
    col = Collector(src)
    with open(path, "wb") as f:
        f.write(data[:40])
        f.flush()
        # keep growing the file over several polls: it must not be read meanwhile
        for k in range(40, len(data), max(1, len(data) // 6)):
            time.sleep(0.07)
            f.write(data[k:k + max(1, len(data) // 6)])
            f.flush()
            assert col.frames == [], "a file still being written was read"
    frames = col.wait_frames(1)
    col.close()
    assert frames[0].error is None
    assert frames[0].image.shape == (64, 64, 3)


def test_corrupt_and_truncated_files_are_reported_once(tmp_path):
    src = _source(tmp_path)
    _ok, png = cv2.imencode(".png", _img(60, 40, 40))
    _ok2, jpg = cv2.imencode(".jpg", _img(60, 40, 40))
    t0 = time.time() - 50
    (src.dir / "1-trunc.png").write_bytes(png.tobytes()[:-30])
    (src.dir / "2-trunc.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (src.dir / "3-garbage.png").write_bytes(b"\x89PNG not really" * 10 + b"IEND\xaeB`\x82")
    (src.dir / "4-empty.bmp").write_bytes(b"")
    _write(src.dir / "5-good.png", 77)
    for i, name in enumerate(sorted(os.listdir(src.dir))):
        os.utime(src.dir / name, (t0 + i, t0 + i))
    col = Collector(src)
    frames = col.wait_frames(5)
    time.sleep(0.3)
    col.close()
    assert len(col.frames) == 5
    errors = {f.name: f.error for f in frames}
    assert errors["5-good.png"] is None
    for name in ("1-trunc.png", "2-trunc.jpg", "3-garbage.png", "4-empty.bmp"):
        assert errors[name] and errors[name].startswith("unreadable"), (name, errors[name])
        assert next(f for f in frames if f.name == name).image is None
    assert "truncated" in errors["1-trunc.png"] and "truncated" in errors["2-trunc.jpg"]
    src.ack(frames)
    h = src.health()
    assert h["files_failed"] == 4 and h["files_acked"] == 5 and h["in_flight"] == 0
    # a restart does not retry the failed files either
    src.close()
    src2 = _source(tmp_path)
    col2 = Collector(src2)
    time.sleep(0.4)
    col2.close()
    assert col2.frames == []


def test_restart_resumes_only_unacknowledged(tmp_path):
    src = _source(tmp_path)
    t0 = time.time() - 100
    for i in range(4):
        _write(src.dir / f"f{i}.png", 10 * i, t0 + i)
    col = Collector(src)
    frames = col.wait_frames(4)
    col.close()
    src.ack(frames[:2])           # only the first two reached a delivered batch
    src.close()
    src2 = _source(tmp_path)
    col2 = Collector(src2)
    again = col2.wait_frames(2)
    time.sleep(0.3)
    col2.close()
    assert [f.name for f in col2.frames] == ["f2.png", "f3.png"]
    src2.ack(again)
    # a file rewritten in place (new mtime) is new data and is read again
    _write(src2.dir / "f0.png", 99, time.time() - 10)
    col3 = Collector(src2)
    third = col3.wait_frames(1)
    time.sleep(0.2)
    col3.close()
    assert [f.name for f in col3.frames] == ["f0.png"]
    assert int(third[0].image[0, 0, 0]) == 99
    assert src2.health()["files_acked"] == 2


@pytest.mark.parametrize("after", ["move", "delete"])
def test_after_processing_move_or_delete(tmp_path, after):
    kw = {"after": after}
    if after == "move":
        kw["move_to"] = tmp_path / "done"
        kw["failed_to"] = tmp_path / "failed"
    src = _source(tmp_path, **kw)
    _write(src.dir / "ok.png", 30, time.time() - 10)
    (src.dir / "bad.png").write_bytes(b"junk")
    os.utime(src.dir / "bad.png", (time.time() - 50, time.time() - 50))
    col = Collector(src)
    frames = col.wait_frames(2)
    col.close()
    assert (src.dir / "ok.png").exists(), "moved/deleted before the batch was delivered"
    src.ack(frames)
    assert not (src.dir / "ok.png").exists()
    if after == "move":
        assert (tmp_path / "done" / "ok.png").is_file()
        assert (tmp_path / "failed" / "bad.png").is_file()
        assert not (src.dir / "bad.png").exists()
    else:
        assert (src.dir / "bad.png").exists()  # no failed_to: left in place, not retried


def test_config_errors(tmp_path):
    with pytest.raises(ValidationError, match="move_to"):
        FolderSourceConfig(after="move")
    with pytest.raises(ValidationError):
        FolderSourceConfig(poll_s=0)
    (tmp_path / "a_file").write_text("")
    src = FolderSource(FolderSourceConfig(path=tmp_path / "a_file"), state_dir=tmp_path)
    with pytest.raises(UserError, match="a_file: not a directory"):
        src.open()


def test_frame_size_hint_is_the_oldest_pending_decodable_file(tmp_path):
    src = _source(tmp_path)
    assert src.frame_size_hint() is None  # empty folder
    t0 = time.time() - 100
    (src.dir / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    os.utime(src.dir / "a_broken.png", (t0, t0))
    assert cv2.imwrite(str(src.dir / "b.png"), _img(50, h=30, w=40))
    os.utime(src.dir / "b.png", (t0 + 1, t0 + 1))
    assert cv2.imwrite(str(src.dir / "c.png"), _img(60, h=50, w=70))
    os.utime(src.dir / "c.png", (t0 + 2, t0 + 2))
    assert src.frame_size_hint() == (30, 40)  # the broken oldest file is skipped
    col = Collector(src)
    frames = col.wait_frames(3)
    col.close()
    src.ack([f for f in frames if f.name == "b.png"])
    assert src.frame_size_hint() == (50, 70)  # b.png is done; nothing was marked by hints
    assert src.health()["files_acked"] == 1


def test_file_created_empty_and_written_later_is_read_not_rejected(tmp_path):
    """Camera software that creates the file, pauses, then writes it: the empty file is
    not reported unreadable while it is young (truncated_grace_s), and its content is read."""
    src = _source(tmp_path, stable_polls=2, truncated_grace_s=10)
    path = src.dir / "late.png"
    path.write_bytes(b"")
    col = Collector(src)
    time.sleep(0.4)  # many polls with the file empty and stable
    assert col.frames == [], "a young empty file was read (and would be lost)"
    _write(path, 55)
    frames = col.wait_frames(1)
    col.close()
    assert frames[0].error is None and int(frames[0].image[0, 0, 0]) == 55


def test_old_empty_file_is_reported_after_the_grace(tmp_path):
    src = _source(tmp_path, truncated_grace_s=0.2)
    (src.dir / "never.png").write_bytes(b"")
    col = Collector(src)
    frames = col.wait_frames(1)
    col.close()
    assert frames[0].error == "unreadable: empty file"


def test_unreadable_file_is_tried_max_attempts_times_then_reported(tmp_path, monkeypatch, caplog):
    """An OS error (a flaky share) is retried; after max_attempts the file is an error
    frame with one warning; the newer files are read meanwhile."""
    from edge.sources import folder
    from edge.vision.decode import DecodeError

    real = folder.decode_file
    tries: list[str] = []

    def flaky(path, **kw):
        if Path(path).name == "a.png":
            tries.append(Path(path).name)
            raise DecodeError("cannot read: Input/output error", kind="io")
        return real(path, **kw)

    monkeypatch.setattr(folder, "decode_file", flaky)
    src = _source(tmp_path, max_attempts=3, stable_polls=1)
    t0 = time.time() - 100
    _write(src.dir / "a.png", 10, t0)
    _write(src.dir / "b.png", 20, t0 + 1)
    col = Collector(src)
    frames = col.wait_frames(2)
    time.sleep(0.3)
    col.close()
    assert [f.name for f in frames] == ["b.png", "a.png"]
    assert len(tries) == 3
    assert frames[1].error == "unreadable: failed 3 times: cannot read: Input/output error"
    assert [r.getMessage() for r in caplog.records if "a.png" in r.getMessage()] == [
        f"folder source: {src.dir / 'a.png'}: {frames[1].error}"]


def test_frame_size_hint_skips_files_over_the_limits_and_never_raises(tmp_path, monkeypatch):
    from tests.edge.test_decode import crafted_png

    src = _source(tmp_path)
    t0 = time.time() - 100
    (src.dir / "a_bomb.png").write_bytes(crafted_png(60000, 60000))
    os.utime(src.dir / "a_bomb.png", (t0, t0))
    assert cv2.imwrite(str(src.dir / "b.png"), _img(50, h=30, w=40))
    assert src.frame_size_hint() == (30, 40)

    def broken(*_a, **_k):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(src, "_scan", broken)
    assert src.frame_size_hint() is None


def test_missing_folder_is_waited_for_and_reported(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    src = FolderSource(FolderSourceConfig(path=tmp_path / "later", poll_s=0.05,
                                          stable_polls=1), state_dir=state)
    src.open()  # not an error: a share may be mounted later
    assert src.health()["waiting_for"] == str(tmp_path / "later")
    assert src.frame_size_hint() is None
    col = Collector(src)
    time.sleep(0.2)
    (tmp_path / "later").mkdir()
    _write(tmp_path / "later" / "a.png", 10, time.time() - 10)
    frames = col.wait_frames(1)
    col.close()
    assert frames[0].error is None and src.health()["waiting_for"] is None


_KILLING_READER = """
import os, signal, sys, threading
from pathlib import Path
from edge.sources import folder
from edge.sources.folder import FolderSource, FolderSourceConfig

real = folder.decode_file
def deadly(path, **kw):
    if Path(path).name == "poison.png":
        os.kill(os.getpid(), signal.SIGKILL)  # as a decoder crash or the OOM killer would
    return real(path, **kw)
folder.decode_file = deadly
src = FolderSource(FolderSourceConfig(type="folder", path=sys.argv[1], poll_s=0.02,
                                      stable_polls=1, max_attempts=3), state_dir=sys.argv[2])
stop = threading.Event()
for fr in src.frames(stop):
    if fr is not None:
        print(fr.name, fr.error or "ok", flush=True)
        src.ack([fr])
        if fr.name == "z.png":
            break
"""


def test_a_file_that_kills_the_process_while_decoded_is_failed_after_max_attempts(tmp_path):
    """A file whose decoding kills the process (SIGKILL, as a decoder crash or the memory
    limit would) is tried max_attempts times across restarts, then recorded failed without
    being decoded again; the other files are read; no restart loop for ever."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    src_dir, state = tmp_path / "in", tmp_path / "state"
    src_dir.mkdir()
    t0 = time.time() - 100
    _write(src_dir / "a.png", 10, t0)
    _write(src_dir / "poison.png", 20, t0 + 1)
    _write(src_dir / "z.png", 30, t0 + 2)
    runs = []
    for _ in range(4):
        p = subprocess.run([sys.executable, "-c", _KILLING_READER, str(src_dir), str(state)],
                           check=False, cwd=root, capture_output=True, text=True, timeout=60)
        runs.append((p.returncode, p.stdout.split("\n")))
        if p.returncode == 0:
            break
    assert [rc for rc, _ in runs] == [-9, -9, -9, 0], runs
    assert runs[0][1][0] == "a.png ok"
    out = [line for line in runs[-1][1] if line]
    assert out == ["poison.png unreadable: not tried again: the service stopped 3 times "
                   "while reading it", "z.png ok"]
    with sqlite3.connect(state / "folder_source.sqlite3") as db:
        status = dict(db.execute("SELECT path, status FROM processed").fetchall())
        left = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    assert status == {"a.png": "done", "poison.png": "failed", "z.png": "done"}
    assert left == 0
