"""Reading and validating a labelled dataset folder (see :mod:`trainer.data`).

One file at a time is read by :mod:`trainer.data.files`; here the folder is paired,
validated and split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from trainer.data.classes import CLASSES_FILE, ClassesFile, ClassSpec, load_classes
from trainer.data.files import read_contact, read_image, read_label

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_EXTS = (".png", ".tif", ".tiff", ".bmp")
#: Optional folder of contact labels (``<stem>.png``, 1 where a crystal touches another).
CONTACTS_DIR = "contacts"


# ----------------------------------------------------------------------------- issues
@dataclass(frozen=True)
class DataIssue:
    """One problem with one file; ``str()`` gives the one-line message."""

    path: str
    # missing_label | missing_image | duplicate_stem | bad_format | unreadable
    # | size_mismatch | unknown_label_value
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_payload(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path
    label: Path


@dataclass
class DataReport:
    """Result of :meth:`LabelledDataset.validate`: every issue plus class statistics."""

    root: str
    class_names: list[str]
    n_pairs: int = 0
    n_valid: int = 0
    sizes: Counter = field(default_factory=Counter)        # (h, w) -> count
    class_pixels: np.ndarray | None = None                 # (K,) pixels of each class
    image_pixels: np.ndarray | None = None                 # (K,) px of images holding the class
    issues: list[DataIssue] = field(default_factory=list)
    images_with: np.ndarray | None = None                  # (K,) images holding the class

    @property
    def ok(self) -> bool:
        return not self.issues

    def class_fractions(self) -> np.ndarray:
        total = float(self.class_pixels.sum()) if self.class_pixels is not None else 0.0
        if total <= 0:
            return np.zeros(len(self.class_names))
        return self.class_pixels / total

    def to_payload(self) -> dict[str, Any]:
        fr = self.class_fractions()
        return {
            "root": self.root,
            "n_pairs": self.n_pairs,
            "n_valid": self.n_valid,
            "sizes": {f"{w}x{h}": n for (h, w), n in sorted(self.sizes.items())},
            "classes": [
                {"index": i, "name": n,
                 "pixels": int(self.class_pixels[i]) if self.class_pixels is not None else 0,
                 "image_pixels": int(self.image_pixels[i]) if self.image_pixels is not None else 0,
                 "images": int(self.images_with[i]) if self.images_with is not None else 0,
                 "fraction": float(fr[i])}
                for i, n in enumerate(self.class_names)],
            "issues": [i.to_payload() for i in self.issues],
        }


# ----------------------------------------------------------------------------- reader
def _scan(folder: Path, exts: tuple[str, ...]) -> tuple[dict[str, Path], list[DataIssue]]:
    found: dict[str, Path] = {}
    issues: list[DataIssue] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in exts:
            if p.suffix.lower() in IMAGE_EXTS:  # a JPEG label: lossy, cannot hold class ids
                issues.append(DataIssue(str(p), "bad_format",
                                        f"labels must be lossless ({', '.join(exts)}), "
                                        f"not {p.suffix}"))
            continue
        if p.stem in found:
            issues.append(DataIssue(str(p), "duplicate_stem",
                                    f"same stem as {found[p.stem].name}; keep one of them"))
            continue
        found[p.stem] = p
    return found, issues


class LabelledDataset:
    """A labelled dataset folder (see the module docstring for the format).

    Parameters
    ----------
    root
        The dataset folder with ``images/``, ``labels/`` and ``classes.json``.
    items
        Internal: a subset of pairs (used by :meth:`split` and :meth:`subset`).

    Attributes
    ----------
    items : list[Pair]
        Image/label pairs with matching stems, sorted by stem.
    issues : list[DataIssue]
        Pairing problems found while scanning (images without labels and vice versa).
    classes : tuple[ClassSpec, ...]
        Classes in contiguous (network channel) order.
    crystal_class : int
        Contiguous index of the crystal class.
    px_size_um : float | None
        Pixel size from ``classes.json``.

    Raises
    ------
    UserError
        When the folder, ``images/``, ``labels/`` or ``classes.json`` is missing or bad.
    """

    def __init__(self, root: str | Path, *, items: list[Pair] | None = None,
                 _classes: tuple[ClassesFile, tuple[ClassSpec, ...], int] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: dataset folder not found")
        self.info, self.classes, self.crystal_class = _classes or load_classes(
            self.root / CLASSES_FILE)
        self.px_size_um: float | None = self.info.px_size_um
        if items is not None:
            self.items = list(items)
            self.issues: list[DataIssue] = []
            return
        img_dir, lab_dir = self.root / "images", self.root / "labels"
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                raise UserError(f"{d}: folder missing (a dataset has images/ and labels/)")
        images, issues_i = _scan(img_dir, IMAGE_EXTS)
        labels, issues_l = _scan(lab_dir, LABEL_EXTS)
        self.issues = issues_i + issues_l
        for stem in sorted(set(images) - set(labels)):
            self.issues.append(DataIssue(str(images[stem]), "missing_label",
                                         f"no label labels/{stem}.<png|tif|bmp>"))
        for stem in sorted(set(labels) - set(images)):
            self.issues.append(DataIssue(str(labels[stem]), "missing_image",
                                         f"no image images/{stem}.<png|jpg|tif|bmp>"))
        self.items = [Pair(s, images[s], labels[s]) for s in sorted(set(images) & set(labels))]

    # -- basic access
    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"LabelledDataset({str(self.root)!r}, n={len(self)}, classes={self.class_names})"

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def dark_class(self) -> int | None:
        """Contiguous index of the black (outside-the-field) background class, if named so."""
        for c in self.classes:
            n = c.name.lower()
            if ("black" in n or "dark" in n) and c.index != self.crystal_class:
                return c.index
        return None

    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.items[i].image)

    def load_label(self, i: int) -> np.ndarray:
        return read_label(self.items[i].label, self.classes)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image RGB uint8 ``(H, W, 3)`` and label uint8 ``(H, W)`` (contiguous class ids).

        Raises :class:`UserError` naming the file when unreadable, of different sizes, or
        when the label holds values that are not classes.
        """
        img = self.load_image(i)
        lab = self.load_label(i)
        check_same_size(self.items[i], img, lab)
        return img, lab

    # -- contact labels (optional): CONTACTS_DIR/<stem>.png, 1 where a crystal touches another
    def contact_path(self, i: int) -> Path:
        return self.root / CONTACTS_DIR / f"{self.items[i].stem}.png"

    @property
    def has_contacts(self) -> bool:
        """Every frame has a contact label (``contacts/<stem>.png``)."""
        return len(self) > 0 and all(self.contact_path(i).is_file() for i in range(len(self)))

    def load_contact(self, i: int) -> np.ndarray | None:
        """Contact label uint8 0/1 ``(H, W)`` of frame ``i``, or None when it has none.

        Raises :class:`UserError` naming the file when it cannot be read or is not
        single-channel (the caller compares its size with the label's).
        """
        path = self.contact_path(i)
        if not path.is_file():
            return None
        return read_contact(path)

    # -- subsets
    def subset(self, indices: Iterable[int]) -> LabelledDataset:
        return LabelledDataset(self.root, items=[self.items[i] for i in indices],
                               _classes=(self.info, self.classes, self.crystal_class))

    def split(self, val_fraction: float = 0.2,
              seed: int = 0) -> tuple[LabelledDataset, LabelledDataset]:
        """Seeded train/validation split by file; see :func:`split_indices`."""
        tr, va = split_indices(len(self), val_fraction, seed)
        return self.subset(tr), self.subset(va)

    # -- validation
    def validate(self, progress: Callable[[int, int], None] | None = None) -> DataReport:
        """Read every pair; collect ALL issues and the class pixel statistics.

        ``image_pixels[k]`` sums the pixel count of the images in which class ``k``
        appears (the study's "ImagePixelCount", for median-frequency weights).
        """
        k = self.n_classes
        rep = DataReport(root=str(self.root), class_names=self.class_names,
                         n_pairs=len(self), class_pixels=np.zeros(k, np.int64),
                         image_pixels=np.zeros(k, np.int64), issues=list(self.issues),
                         images_with=np.zeros(k, np.int64))
        for i, pair in enumerate(self.items):
            if progress is not None:
                progress(i, len(self))
            try:
                img = read_image(pair.image)
            except UserError as exc:
                rep.issues.append(DataIssue(str(pair.image), "unreadable", _msg(exc, pair.image)))
                img = None
            try:
                lab = read_label(pair.label, self.classes)
            except UserError as exc:
                kind = "unreadable" if "unreadable" in str(exc) else "unknown_label_value"
                rep.issues.append(DataIssue(str(pair.label), kind, _msg(exc, pair.label)))
                continue
            if img is None:
                continue
            if img.shape[:2] != lab.shape:
                rep.issues.append(DataIssue(
                    str(pair.label), "size_mismatch",
                    f"label size {lab.shape[1]}x{lab.shape[0]} differs from image "
                    f"{img.shape[1]}x{img.shape[0]} ({pair.image.name})"))
                continue
            counts = np.bincount(lab.ravel(), minlength=k)[:k].astype(np.int64)
            rep.class_pixels += counts
            rep.image_pixels[counts > 0] += lab.size
            rep.images_with[counts > 0] += 1
            rep.sizes[lab.shape] += 1
            rep.n_valid += 1
        return rep


def check_same_size(item: Pair, image: np.ndarray, label: np.ndarray) -> None:
    """:class:`UserError` naming ``item``'s label when ``label`` is not ``image``'s size."""
    if image.shape[:2] != label.shape:
        raise UserError(f"{item.label}: label size {label.shape[1]}x{label.shape[0]} "
                        f"differs from image {image.shape[1]}x{image.shape[0]} "
                        f"({item.image.name})")


def _msg(exc: UserError, path: Path) -> str:
    s = str(exc)
    prefix = f"{path}: "
    return s[len(prefix):] if s.startswith(prefix) else s


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` files into train and validation indices (both sorted).

    ``round(n * val_fraction)`` files go to validation, at least one when ``n >= 2`` and
    ``val_fraction > 0``; the same ``(n, val_fraction, seed)`` always gives the same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])
