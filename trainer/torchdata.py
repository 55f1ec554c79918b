"""torch Datasets over a :class:`trainer.data.LabelledDataset`.

:class:`TrainCrops` yields randomly placed, augmented crops (one affine warp per sample,
see :mod:`trainer.augment`); :class:`EvalFrames` yields whole frames padded to the
network's size multiple (padding labelled with the ignore index). Both first resize the
frames by ``input_scale`` (:mod:`trainer.rescale`), so the network runs at the pixel size
``px_size_um / input_scale``.

Multi-scale training (``scale_range``): each crop is cut from the frame resized by
``input_scale * f``, with ``f`` drawn log-uniformly from the range. The resize is the one
the edge does (area averaging when shrinking), from the frame as stored, so a crop at a
finer network scale carries the detail of the frame and not an enlarged coarse copy; the
zoom of the augmentation then jitters around that scale as before.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.augment import IGNORE_INDEX, AugmentConfig, augment_pair, augment_with_contact
from trainer.model import SIZE_MULTIPLE
from trainer.rescale import scale_contact, scale_pair


def pad_to_multiple(image: np.ndarray, label: np.ndarray | None = None,
                    multiple: int = SIZE_MULTIPLE,
                    *, ignore_index: int = IGNORE_INDEX):
    """Pad bottom/right to multiples of ``multiple`` (image with 0, label with ignore)."""
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        if label is not None:
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                       value=int(ignore_index))
    return image, label


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float image (H, W, 3) in [0, 1] and uint8 label -> CHW float32, HW int64."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    y = torch.from_numpy(label.astype(np.int64))
    return x, y


class _Frames:
    """Loads frames of a LabelledDataset at the network scale, with a small cache."""

    def __init__(self, data, input_scale: float, cache: bool) -> None:
        if not input_scale > 0:
            raise ValueError(f"input_scale must be > 0, got {input_scale}")
        self.data = data
        self.input_scale = float(input_scale)
        self.cache = cache
        self._cache: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}
        self._contacts: dict[tuple[int, float], np.ndarray] = {}

    def get(self, i: int, factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``i`` and its label at ``input_scale * factor``.

        The cache holds the frames at ``input_scale`` when ``factor`` is always 1, and as
        stored otherwise (a multi-scale run resizes them for every crop).
        """
        if factor == 1.0:
            return self._stored(i, self.input_scale)
        img, lab = self._stored(i, 1.0)
        return scale_pair(img, lab, self.input_scale * factor)

    def _stored(self, i: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        key = (i, scale)
        if key in self._cache:
            return self._cache[key]
        pair = scale_pair(*self.data.load(i), scale)
        if self.cache:
            self._cache[key] = pair
        return pair

    def get_contact(self, i: int, factor: float = 1.0) -> np.ndarray:
        """The contact label of frame ``i`` at ``input_scale * factor`` (uint8 0/1)."""
        key = (i, factor)
        if key in self._contacts:
            return self._contacts[key]
        con = self.data.load_contact(i)
        if con is None:
            raise ValueError(f"{self.data.contact_path(i)}: contact label missing")
        # a multi-scale run holds the frames as stored; otherwise compare at input_scale
        scale = 1.0 if factor != 1.0 else self.input_scale
        if scale_contact(con, scale).shape != self._stored(i, scale)[1].shape:
            raise ValueError(f"{self.data.contact_path(i)}: size differs from the label's")
        con = scale_contact(con, self.input_scale * factor)
        if self.cache and factor == 1.0:
            self._contacts[key] = con
        return con


class TrainCrops(Dataset):
    """Random augmented crops of the training frames.

    Parameters
    ----------
    data : trainer.data.LabelledDataset
        The training frames.
    crop_size : int
        Side of the square crop at network scale (a multiple of 16).
    samples_per_epoch : int
        Length of one epoch in samples.
    input_scale : float
        Resize factor applied to frames before cropping (0.5: half resolution).
    augment : AugmentConfig, optional
        Augmentation settings (default: the study's).
    seed : int
        Base seed; sample ``k`` of epoch ``e`` always gets the same augmentation.
    contacts : bool
        Also yield the contact label (``contacts/<stem>.png``) warped with the label
        (:func:`trainer.augment.augment_with_contact`): samples are ``(x, y, c)``.
    scale_range : (lo, hi), optional
        Multi-scale training: each sample's frame is resized by ``input_scale * f`` with
        ``log f ~ U(log lo, log hi)`` before the crop, so the network learns pixel sizes
        from ``px / (input_scale * hi)`` to ``px / (input_scale * lo)``. None: every crop
        at ``input_scale`` (and the same draws as without the option).
    """

    #: redraw the augmentation (up to MAX_TRIES times) while fewer than this fraction of
    #: the crop's pixels come from inside the frame
    MIN_VALID = 0.5
    MAX_TRIES = 10

    def __init__(self, data, *, crop_size: int = 256, samples_per_epoch: int = 64,
                 input_scale: float = 1.0, augment: AugmentConfig | None = None,
                 seed: int = 0, cache: bool = True, contacts: bool = False,
                 scale_range: tuple[float, float] | None = None) -> None:
        if len(data) == 0:
            raise ValueError("training dataset is empty")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range {scale_range}: expected 0 < lo <= hi")
        if crop_size % SIZE_MULTIPLE:
            raise ValueError(f"crop_size must be a multiple of {SIZE_MULTIPLE}, got {crop_size}")
        self.frames = _Frames(data, input_scale, cache)
        self.crop_size = int(crop_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.augment = augment or AugmentConfig()
        self.seed = int(seed)
        self.epoch = 0
        self.contacts = bool(contacts)
        self.scale_range = None if scale_range is None else (float(scale_range[0]),
                                                             float(scale_range[1]))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, self.epoch, int(k)])
        n = len(self.frames.data)
        i = int(rng.integers(n)) if self.samples_per_epoch != n else int(k)
        factor = 1.0
        if self.scale_range is not None:  # a fixed factor draws nothing
            lo, hi = np.log(self.scale_range)
            factor = float(np.exp(rng.uniform(lo, hi))) if hi > lo else self.scale_range[0]
        img, lab = self.frames.get(i, factor)
        h, w = lab.shape
        half = self.crop_size / 2.0
        cx = rng.uniform(min(half, w / 2.0), max(w - half, w / 2.0))
        cy = rng.uniform(min(half, h / 2.0), max(h - half, h / 2.0))
        size = (self.crop_size, self.crop_size)
        con = self.frames.get_contact(i, factor) if self.contacts else None
        for _ in range(self.MAX_TRIES):
            if con is None:
                x, y = augment_pair(img, lab, rng, self.augment, out_size=size,
                                    src_center=(cx, cy))
            else:
                x, y, c = augment_with_contact(img, lab, con, rng, self.augment, out_size=size,
                                               src_center=(cx, cy))
            if np.count_nonzero(y != IGNORE_INDEX) >= self.MIN_VALID * y.size:
                break
        if con is None:
            return to_tensors(x, y)
        return (*to_tensors(x, y), torch.from_numpy(c))


class EvalFrames(Dataset):
    """Whole frames at network scale, padded to the size multiple (no augmentation)."""

    def __init__(self, data, *, input_scale: float = 1.0, cache: bool = True) -> None:
        self.frames = _Frames(data, input_scale, cache)

    def __len__(self) -> int:
        return len(self.frames.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lab = self.frames.get(i)
        img, lab = pad_to_multiple(img, lab)
        return to_tensors(img.astype(np.float32) / 255.0, lab)
