"""Class weights by median-frequency balancing, exactly as the study (its Table 2).

Per class ``k``: ``frequency[k] = pixel_count[k] / image_pixel_count[k]`` where
``image_pixel_count[k]`` sums the pixel counts of the images in which class ``k``
appears; ``weight[k] = median(frequency) / frequency[k]``. A class that appears in no
image gets weight 0 (it cannot be learnt from this data) and is left out of the median.
Only numpy is needed (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import UserError

PAIRING_KINDS = ("missing_label", "missing_image", "duplicate_stem", "bad_format")


@dataclass(frozen=True)
class ClassWeights:
    """Pixel statistics and the resulting weights, per class in contiguous order."""

    class_names: list[str]
    pixel_count: np.ndarray       # (K,) int64
    image_pixel_count: np.ndarray  # (K,) int64
    frequency: np.ndarray          # (K,) float64
    weights: np.ndarray            # (K,) float64
    n_images: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {
            "method": "median_frequency",
            "n_images": int(self.n_images),
            "class_names": list(self.class_names),
            "weights": [float(w) for w in self.weights],
            "classes": [
                {"index": i, "name": n, "pixel_count": int(self.pixel_count[i]),
                 "image_pixel_count": int(self.image_pixel_count[i]),
                 "frequency": float(self.frequency[i]), "weight": float(self.weights[i])}
                for i, n in enumerate(self.class_names)],
        }

    def table(self) -> str:
        """The study's Table 2 layout as plain text."""
        head = f"{'class':<20} {'pixel count':>14} {'image pixel count':>18} " \
               f"{'frequency':>10} {'weight':>8}"
        rows = [head, "-" * len(head)]
        for i, n in enumerate(self.class_names):
            rows.append(f"{n:<20} {self.pixel_count[i]:>14,d} {self.image_pixel_count[i]:>18,d} "
                        f"{self.frequency[i]:>10.4f} {self.weights[i]:>8.4f}")
        return "\n".join(rows)


def median_frequency_weights(counts, image_pixels) -> np.ndarray:
    """Median-frequency class weights.

    Parameters
    ----------
    counts : array_like, shape (K,)
        Pixels of each class over the dataset.
    image_pixels : array_like, shape (K,)
        For each class, the summed pixel count of the images in which it appears.

    Returns
    -------
    numpy.ndarray, shape (K,), float64
        ``median(f) / f`` with ``f = counts / image_pixels``; 0 for absent classes.

    Examples
    --------
    >>> median_frequency_weights([26255602, 96827755, 14221337],
    ...                          [78162629, 137304694, 137007498]).round(4).tolist()
    [1.0, 0.4763, 3.2361]
    """
    c = np.asarray(counts, dtype=np.float64)
    n = np.asarray(image_pixels, dtype=np.float64)
    if c.ndim != 1 or c.shape != n.shape or c.size == 0:
        raise ValueError(f"counts {c.shape} and image_pixels {n.shape} must be equal 1-D shapes")
    if (c < 0).any() or (n < 0).any() or (c > n).any():
        raise ValueError("counts and image_pixels must be >= 0 with counts <= image_pixels")
    present = c > 0
    if not present.any():
        raise ValueError("no class has any pixels")
    freq = np.zeros_like(c)
    freq[present] = c[present] / n[present]
    med = float(np.median(freq[present]))
    w = np.zeros_like(c)
    w[present] = med / freq[present]
    return w


def class_pixel_stats(dataset, progress=None) -> ClassWeights:
    """Count class pixels of a :class:`trainer.data.LabelledDataset` and weight them.

    Images without labels (and vice versa) are not pairs and are ignored here.

    Raises
    ------
    UserError
        When a pair cannot be read or decoded, or its sizes differ (the first such
        problem, with the count of the others), or when there are no valid pairs.
    """
    rep = dataset.validate(progress=progress)
    # files without a partner are not in the pairs and do not change the counts
    bad = [i for i in rep.issues if i.kind not in PAIRING_KINDS]
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more; run crystal-train check-data)" \
            if len(bad) > 1 else ""
        raise UserError(f"{first}{more}")
    if rep.n_valid == 0:
        raise UserError(f"{dataset.root}: no image/label pairs")
    return weights_from_counts(rep.class_pixels, rep.image_pixels, dataset.class_names,
                               n_images=rep.n_valid)


def weights_from_counts(counts, image_pixels, class_names, *, n_images: int = 0) -> ClassWeights:
    c = np.asarray(counts, dtype=np.int64)
    n = np.asarray(image_pixels, dtype=np.int64)
    freq = np.where(n > 0, c / np.maximum(n, 1), 0.0)
    return ClassWeights(class_names=list(class_names), pixel_count=c, image_pixel_count=n,
                        frequency=freq, weights=median_frequency_weights(c, n),
                        n_images=n_images)


__all__ = ["ClassWeights", "class_pixel_stats", "median_frequency_weights", "weights_from_counts"]
