"""Joint image/label augmentation (numpy + OpenCV): the study's Table 3 plus photometric jitter.

Geometry (random x reflection, rotation, x and y shear, translation, zoom) is composed
into ONE affine matrix per sample and applied with a single ``cv2.warpAffine`` to the
image (bilinear) and to the label (nearest neighbour, outside pixels set to the ignore
index), so image and label stay aligned exactly. Photometric jitter (brightness,
contrast, Gaussian blur, Gaussian noise) touches only the image.

The affine maps the source frame into an output window of a chosen size centred on a
chosen source point, so the same warp also does the random crop.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

IGNORE_INDEX = 255


class AugmentConfig(BaseModel):
    """Augmentation switches and ranges; the defaults are the study's Table 3.

    A range ``(a, b)`` draws uniformly from ``[a, b]``; ``(0, 0)`` (or ``(1, 1)`` for
    zoom) switches a technique off. ``enabled=False`` switches everything off.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="master switch for all augmentation")
    flip_x: bool = Field(True, description="random reflection in x (probability 0.5)")
    rotation_deg: tuple[float, float] = Field((0.0, 90.0), description="rotation angle range (deg)")
    shear_x_deg: tuple[float, float] = Field((0.0, 45.0), description="x shear angle range (deg)")
    shear_y_deg: tuple[float, float] = Field((0.0, 45.0), description="y shear angle range (deg)")
    translate_px: tuple[float, float] = Field(
        (-100.0, 100.0), description="x and y translation range (px of the network input)")
    zoom: tuple[float, float] = Field((0.75, 1.5), description="isotropic scale factor range")
    brightness: float = Field(0.1, ge=0,
                              description="additive brightness jitter, +- fraction of 255")
    contrast: float = Field(0.2, ge=0,
                            description="contrast jitter: gain in [1-c, 1+c] about the mean")
    blur_prob: float = Field(0.2, ge=0, le=1, description="probability of a Gaussian blur")
    blur_sigma: tuple[float, float] = Field((0.3, 1.5),
                                            description="Gaussian blur sigma range (px)")
    noise_std: float = Field(0.02, ge=0,
                             description="max std of additive Gaussian noise (fraction of 255)")


PRESETS: dict[str, AugmentConfig] = {
    "study": AugmentConfig(),
    # for short schedules: the study's rotation and flips, milder shear/zoom/translation
    "light": AugmentConfig(rotation_deg=(0.0, 90.0), shear_x_deg=(0.0, 10.0),
                           shear_y_deg=(0.0, 10.0), translate_px=(-20.0, 20.0),
                           zoom=(0.85, 1.2)),
    "none": AugmentConfig(enabled=False),
}


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(lo) if hi <= lo else float(rng.uniform(lo, hi))


def random_affine(rng: np.random.Generator, config: AugmentConfig, *,
                  src_center: tuple[float, float], out_size: tuple[int, int]) -> np.ndarray:
    """Draw one 2x3 affine matrix (source -> output pixel coordinates).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    config : AugmentConfig
        Ranges; with ``enabled=False`` or all techniques off this is a pure crop.
    src_center : (x, y)
        Source point that lands at the centre of the output window (before translation).
    out_size : (height, width)
        Output window size.

    Returns
    -------
    numpy.ndarray
        ``(2, 3)`` float64 matrix for :func:`cv2.warpAffine`.
    """
    a = np.eye(2)
    t = np.zeros(2)
    if config.enabled:
        if config.flip_x and rng.random() < 0.5:
            a = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ a
        shx = math.tan(math.radians(_uniform(rng, config.shear_x_deg)))
        shy = math.tan(math.radians(_uniform(rng, config.shear_y_deg)))
        a = np.array([[1.0, shx], [0.0, 1.0]]) @ np.array([[1.0, 0.0], [shy, 1.0]]) @ a
        th = math.radians(_uniform(rng, config.rotation_deg))
        c, s = math.cos(th), math.sin(th)
        a = np.array([[c, -s], [s, c]]) @ a
        a = _uniform(rng, config.zoom) * a
        t = np.array([_uniform(rng, config.translate_px), _uniform(rng, config.translate_px)])
    h, w = out_size
    out_c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    offset = out_c + t - a @ np.asarray(src_center, dtype=np.float64)
    return np.hstack([a, offset[:, None]])


def warp_pair(image: np.ndarray, label: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int],
              *, ignore_index: int = IGNORE_INDEX,
              pad_value: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Apply one affine to image (bilinear) and label (nearest, padding = ``ignore_index``)."""
    h, w = out_size
    img = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(pad_value,) * 3)
    lab = cv2.warpAffine(label, matrix, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=int(ignore_index))
    return img, lab


def photometric(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Brightness/contrast/blur/noise jitter of a uint8 image; returns float32 in [0, 1]."""
    img = image.astype(np.float32) / 255.0
    if not config.enabled:
        return img
    if config.contrast > 0:
        gain = float(rng.uniform(1 - config.contrast, 1 + config.contrast))
        mean = float(img.mean())
        img = (img - mean) * gain + mean
    if config.brightness > 0:
        img = img + float(rng.uniform(-config.brightness, config.brightness))
    if config.blur_prob > 0 and rng.random() < config.blur_prob:
        sigma = _uniform(rng, config.blur_sigma)
        if sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
    if config.noise_std > 0:
        std = float(rng.uniform(0, config.noise_std))
        img = img + rng.normal(0.0, std, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0, out=img)


def augment_pair(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                 config: AugmentConfig | None = None, *, out_size: tuple[int, int] | None = None,
                 src_center: tuple[float, float] | None = None,
                 ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Augment an image and its label jointly (and crop to ``out_size``).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` uint8).
    label : numpy.ndarray
        ``(H, W)`` uint8 class ids.
    rng : numpy.random.Generator
        Random source (seeded by the caller for reproducibility).
    config : AugmentConfig, optional
        Defaults to the study's settings.
    out_size : (height, width), optional
        Output window; default the input size.
    src_center : (x, y), optional
        Source point mapped to the window centre; default the image centre.
    ignore_index : int
        Label value for pixels that come from outside the source image.

    Returns
    -------
    (image, label)
        ``float32 (h, w[, 3])`` in [0, 1] and ``uint8 (h, w)``.
    """
    if image.ndim not in (2, 3) or label.ndim != 2 or image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} must share (H, W)")
    if image.dtype != np.uint8 or label.dtype != np.uint8:
        raise ValueError(f"expected uint8 image and label, got {image.dtype} and {label.dtype}")
    config = config or AugmentConfig()
    h, w = label.shape
    out_size = out_size or (h, w)
    if src_center is None:
        src_center = ((w - 1) / 2.0, (h - 1) / 2.0)
    m = random_affine(rng, config, src_center=src_center, out_size=out_size)
    img, lab = warp_pair(image, label, m, out_size, ignore_index=ignore_index)
    return photometric(img, rng, config), lab


#: Bit of a packed label that holds the contact label (class ids stay below it).
CONTACT_BIT = 0x80


def augment_with_contact(image: np.ndarray, label: np.ndarray, contact: np.ndarray,
                         rng: np.random.Generator, config: AugmentConfig | None = None, *,
                         out_size: tuple[int, int] | None = None,
                         src_center: tuple[float, float] | None = None,
                         ignore_index: int = IGNORE_INDEX
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`augment_pair` of an image, its label and its contact label (uint8 0/1).

    The contact label rides in the label's top bit (``label | CONTACT_BIT * contact``)
    through the one nearest-neighbour warp, so it moves with the label pixel for pixel;
    the same ``rng`` draws give the same image as :func:`augment_pair`. Returns the
    image, the label and the contact label (``ignore_index`` outside the source, like
    the label).
    """
    if contact.shape != label.shape:
        raise ValueError(f"contact {contact.shape} and label {label.shape} must share (H, W)")
    if label.size and int(label.max()) >= CONTACT_BIT:
        raise ValueError(f"class ids must be below {CONTACT_BIT} to carry a contact label")
    packed = label | np.where(contact != 0, CONTACT_BIT, 0).astype(np.uint8)
    img, lab = augment_pair(image, packed, rng, config, out_size=out_size,
                            src_center=src_center, ignore_index=ignore_index)
    outside = lab == ignore_index
    cls = np.where(outside, ignore_index, lab & (CONTACT_BIT - 1)).astype(np.uint8)
    con = np.where(outside, ignore_index, (lab & CONTACT_BIT) != 0).astype(np.uint8)
    return img, cls, con
