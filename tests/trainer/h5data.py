"""Tiny labelled datasets for the trainer tests (real PNG files read by the real reader).

A frame: black outside an illuminated disc (class 0), light background (class 1), dark
elliptical crystals with a bright rim (class 2); the label is drawn with the same shapes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trainer.data import write_classes

CLASS_NAMES = ["black_background", "light_background", "crystal"]


def make_frame(rng: np.random.Generator, h: int = 64, w: int = 64,
               n_crystals: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 frame and its uint8 label."""
    lab = np.zeros((h, w), np.uint8)
    cv2.circle(lab, (w // 2, h // 2), int(0.62 * max(h, w)), 1, -1)
    for _ in range(n_crystals):
        c = (int(rng.integers(8, w - 8)), int(rng.integers(8, h - 8)))
        ax = (int(rng.integers(3, max(4, w // 8))), int(rng.integers(3, max(4, h // 8))))
        cv2.ellipse(lab, c, ax, float(rng.uniform(0, 180)), 0, 360, 2, -1)
    img = np.empty((h, w, 3), np.uint8)
    base = np.array([[10, 10, 12], [200, 205, 210], [70, 75, 80]], np.float32)
    img[:] = base[lab].astype(np.uint8)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), lab


def make_dataset(root: str | Path, n: int = 4, *, h: int = 64, w: int = 64, seed: int = 0,
                 px_size_um: float = 1.45) -> Path:
    """Write ``n`` frames as a dataset folder (images/, labels/, classes.json)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, lab = make_frame(rng, h, w)
        cv2.imwrite(str(root / "images" / f"f{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "labels" / f"f{i:03d}.png"), lab)
    write_classes(root / "classes.json", CLASS_NAMES, crystal_class=2, px_size_um=px_size_um)
    return root


def train_tiny_run(root: str | Path, *, steps: int = 4, seed: int = 4) -> tuple[Path, Path]:
    """Train a ResNet-18 run for ``steps`` steps on a 4-frame dataset under ``root``.

    Returns ``(dataset, run directory)``; the run has ``best.pt`` to export.
    """
    from trainer.cli import main as cli

    root = Path(root)
    train = make_dataset(root / "train", 4, h=64, w=64, seed=seed, px_size_um=1.45)
    out = root / "run"
    assert cli(["train", "--data", str(train), "--out", str(out), "--backbone", "resnet18",
                "--weights", "none", "--epochs", "1", "--steps-per-epoch", str(steps),
                "--batch-size", "2", "--image-size", "64", "--input-scale", "0.5",
                "--workers", "0", "--no-progress", "--augment", "none"]) == 0
    return train, out


def frames_nchw(seed: int, h: int, w: int, *, n: int = 2, n_crystals: int = 5) -> np.ndarray:
    """``n`` generated RGB frames as NCHW float32 in [0, 1] (network input)."""
    rng = np.random.default_rng(seed)
    return np.stack([make_frame(rng, h, w, n_crystals=n_crystals)[0] for _ in range(n)]
                    ).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
