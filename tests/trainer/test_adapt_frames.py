"""`crystal-train adapt --frames DIR` on a plant's folder as it is: a corrupt or truncated
file among the frames is skipped with one warning (as `crystal-edge analyze` and the
service skip it), and only a folder without any decodable frame is refused."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from trainer.adapt import list_frames, read_frames


def test_a_corrupt_frame_is_skipped_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(good[:40] + b"\0" * 100 + good[-12:])
    with caplog.at_level(logging.WARNING):
        images = read_frames(list_frames(tmp_path), limit=32)
    assert len(images) == 2 and images[0].shape == (48, 64, 3)
    assert any("b.png" in r.getMessage() and "skipped" in r.getMessage()
               for r in caplog.records)


def test_no_decodable_frame_is_one_error_line(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match=r"none of the 1 frames decodes \(.*x\.png"):
        read_frames(list_frames(tmp_path), limit=32)
