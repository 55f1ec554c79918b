"""Frame pre-processing for the segmentation network, and back from logits to class maps.

Conventions (the model contract is :mod:`edge.modelmeta`):

* **Channels.** Frames arrive as OpenCV decodes them: grey ``(H, W)`` or ``(H, W, 1)``,
  BGR ``(H, W, 3)``, BGRA ``(H, W, 4)`` (alpha dropped). Colour frames are converted BGR ->
  RGB (``color_order="rgb"`` when a source already delivers RGB); grey is replicated to
  three channels.
* **Bit depth.** uint8 is divided by 255. uint16 is divided by ``2**bit_depth - 1``;
  with ``bit_depth=None`` the depth is the smallest of 10, 12, 14, 16 bits that holds the
  frame's maximum (a 12-bit camera in a 16-bit container is scaled by 4095, not 65535,
  so it is not four times too dark). Floating frames must already be in [0, 1].
* **Scale.** ``inference_scale`` s resizes frames before inference (INTER_AREA when
  shrinking), in the frame's own integer type before the conversion to float
  (:func:`prepare_for_inference`), so a large frame never exists as float32 at full
  size; a uint16 frame's bit depth is taken from the full frame first. The class map
  is measured at inference resolution, with the pixel size ``px_size_um / s``
  (:func:`inference_px_size`); it is never resized back for measuring, so the
  diameters stay right and nothing is interpolated twice. ``auto_inference_scale``
  picks s so the inference pixel size is the model's trained pixel size, within the
  range of resizing the model was trained with.
* **Padding.** H and W are padded (bottom/right, reflected) to the model's
  ``size_multiple``; the logits are cropped back before the arg-max.
* **Mirror average** (``[model] flip_average``): :func:`flip_averaged` runs the batch
  mirrored as well and averages the two outputs before the arg-max.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

_DEPTHS = (10, 12, 14, 16)
#: How far ``auto_inference_scale`` lets the network's pixel size move from the model's.
AUTO_MAX_PX_SIZE_RATIO = 3.0


def to_rgb_float(image: np.ndarray, *, color_order: str = "bgr",
                 bit_depth: int | None = None) -> np.ndarray:
    """Convert a decoded frame to float32 RGB ``(H, W, 3)`` in [0, 1].

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8, uint16 or float.
    color_order : {"bgr", "rgb"}
        Channel order of 3/4-channel input (OpenCV decodes BGR).
    bit_depth : int, optional
        Significant bits of uint16 input; None = inferred from the maximum (see module).

    Returns
    -------
    np.ndarray
        float32 ``(H, W, 3)``, C-contiguous, RGB, values in [0, 1].
    """
    arr = _frame_array(image)
    if color_order not in ("bgr", "rgb"):
        raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
    if arr.dtype == np.uint8:  # fast path: channel work on 8 bits, then one conversion
        codes = {(2, "bgr"): cv2.COLOR_GRAY2RGB, (2, "rgb"): cv2.COLOR_GRAY2RGB,
                 (3, "bgr"): cv2.COLOR_BGR2RGB, (3, "rgb"): None,
                 (4, "bgr"): cv2.COLOR_BGRA2RGB, (4, "rgb"): cv2.COLOR_RGBA2RGB}
        code = codes[(2 if arr.ndim == 2 else arr.shape[2], color_order)]
        rgb8 = np.ascontiguousarray(arr) if code is None else cv2.cvtColor(
            np.ascontiguousarray(arr), code)
        out = rgb8.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
    out = scale_to_unit(arr, bit_depth=bit_depth)
    if out.ndim == 2:
        return np.ascontiguousarray(np.repeat(out[:, :, None], 3, axis=2))
    out = out[:, :, :3]
    if color_order == "bgr":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def _frame_array(image: np.ndarray) -> np.ndarray:
    """``image`` as an array of a frame's shape; ValueError otherwise."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"expected a (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, "
                         f"got shape {arr.shape}")
    if min(arr.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {arr.shape}")
    return arr


def prepare_for_inference(image: np.ndarray, scale: float, *, color_order: str = "bgr",
                          bit_depth: int | None = None) -> np.ndarray:
    """Float32 RGB ``(h, w, 3)`` in [0, 1] at inference resolution (``scale``).

    uint8 and uint16 frames are resized in their own type first, then converted (see
    the module docstring); the bit depth of a uint16 frame is inferred from the full
    frame, so that averaging cannot change it. Other types are converted, then resized.
    """
    arr = _frame_array(image)
    if arr.dtype not in (np.uint8, np.uint16):
        return resize_for_inference(
            to_rgb_float(arr, color_order=color_order, bit_depth=bit_depth), scale)
    if arr.dtype == np.uint16 and bit_depth is None:
        bit_depth = infer_bit_depth(arr)
    return to_rgb_float(resize_for_inference(np.ascontiguousarray(arr), scale),
                        color_order=color_order, bit_depth=bit_depth)


def scale_to_unit(arr: np.ndarray, *, bit_depth: int | None = None) -> np.ndarray:
    """Intensities as float32 in [0, 1] (see :func:`to_rgb_float` for the rules)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1.0 / 255.0)
    if arr.dtype == np.uint16:
        bits = bit_depth if bit_depth is not None else infer_bit_depth(arr)
        if not 1 <= bits <= 16:
            raise ValueError(f"bit_depth must be 1..16, got {bits}")
        return np.minimum(arr.astype(np.float32) / np.float32(2 ** bits - 1), 1.0)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if out.size and (float(np.nanmin(out)) < -1e-3 or float(np.nanmax(out)) > 1.0 + 1e-3):
            raise ValueError(f"float image must be in [0, 1], got range "
                             f"[{np.nanmin(out):.3g}, {np.nanmax(out):.3g}]")
        return np.clip(np.nan_to_num(out), 0.0, 1.0)
    raise ValueError(f"unsupported image dtype {arr.dtype} (uint8, uint16 or float in [0, 1])")


def infer_bit_depth(arr: np.ndarray) -> int:
    """Smallest of 10/12/14/16 bits whose range holds ``arr.max()``."""
    peak = int(arr.max()) if arr.size else 0
    for bits in _DEPTHS:
        if peak <= 2 ** bits - 1:
            return bits
    return 16


def grey_u8(image: np.ndarray, *, bit_depth: int | None = None) -> np.ndarray:
    """8-bit grey of a decoded frame (for the quality gate and ROI detection).

    uint8 colour uses OpenCV's luma weights (fast path); other depths the channel mean.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return arr
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if arr.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(np.ascontiguousarray(arr), code)
    if arr.ndim == 3 and arr.shape[2] not in (3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {arr.shape}")
    if arr.dtype == np.uint16 and arr.ndim in (2, 3):
        # integer sum and one scaled conversion: no float copy of a large frame
        bits = bit_depth if bit_depth is not None else infer_bit_depth(arr)
        if not 1 <= bits <= 16:
            raise ValueError(f"bit_depth must be 1..16, got {bits}")
        total = arr if arr.ndim == 2 else arr[:, :, :3].sum(axis=2, dtype=np.int32)
        n = 1 if arr.ndim == 2 else 3
        return cv2.convertScaleAbs(total, alpha=255.0 / (n * (2 ** bits - 1)))
    if arr.ndim == 3:
        unit = scale_to_unit(arr[:, :, :3], bit_depth=bit_depth).mean(axis=2)
    elif arr.ndim == 2:
        unit = scale_to_unit(arr, bit_depth=bit_depth)
    else:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {arr.shape}")
    return np.round(unit * 255.0).astype(np.uint8)


def map_grey(image: np.ndarray, class_map: np.ndarray, *, bit_depth: int | None = None
             ) -> np.ndarray:
    """8-bit grey of a decoded frame at the scale of its class map (area-averaged), for
    the field detection and the measurement's photometric tests."""
    grey = grey_u8(image, bit_depth=bit_depth)
    hw = np.shape(class_map)[:2]
    if grey.shape == hw:
        return grey
    return cv2.resize(grey, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def inference_px_size(px_size_um: float, inference_scale: float) -> float:
    """Pixel size (um) of the class map measured at inference resolution."""
    if px_size_um <= 0 or inference_scale <= 0:
        raise ValueError(f"px_size_um ({px_size_um}) and inference_scale ({inference_scale}) "
                         "must be > 0")
    return px_size_um / inference_scale


def auto_inference_scale(px_size_um: float, model_px_size_um: float, *,
                         trained_scale: float | None = None,
                         max_ratio: float = AUTO_MAX_PX_SIZE_RATIO) -> float:
    r"""Scale at which frames of ``px_size_um`` are segmented by a model trained at
    ``model_px_size_um`` from frames resized by ``trained_scale``.

    The model's pixel size :math:`p_m` is the goal, :math:`s_0 = p / p_m`, but frames
    finer than the training frames are not shrunk further than those were, and frames
    coarser than the model's pixel size are enlarged halfway (geometrically):

    .. math::

        s = \begin{cases} s_0^{1/2} & s_0 > 1 \\
                           \max\left(s_0,\; \min(s_t,\; r\,s_0)\right) & s_0 \le 1
            \end{cases}

    with :math:`s_t` the training frames' scale and :math:`r` = ``max_ratio``, which keeps
    the network's pixel size within :math:`r` of :math:`p_m` (objects at most :math:`r`
    times the size the model has seen). Shrinking further than :math:`s_t` averages away
    the thin crystal rims the model separates crystals by: on generated frames of
    0.5 um/px, crystal IoU is 0.75 at :math:`s_0` (2.9 um/px at the network) and 0.94 at
    0.5 (1.0 um/px). Enlarging interpolates: the model outlines soft enlarged edges less
    well, while frames not enlarged at all lose small crystals. On generated frames of
    5 um/px (the model bundled before the present one, 36 frames): crystal IoU 0.912 at
    :math:`s_0` = 1.72, 0.927 at 1.31 and 0.944 at 1.0; Q3 Kolmogorov-Smirnov distance
    0.019, 0.026 and 0.035 (``docs/analyze.md``). Without ``trained_scale`` the result is
    :math:`s_0`.
    """
    if px_size_um <= 0 or model_px_size_um <= 0:
        raise ValueError("pixel sizes must be > 0")
    natural = px_size_um / model_px_size_um
    if trained_scale is None:
        return natural
    if natural > 1.0:
        return math.sqrt(natural)
    return max(natural, min(trained_scale, max_ratio * natural))


def scaled_hw(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """Frame (H, W) after ``scale`` (rounded, at least 1)."""
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def padded_hw(hw: tuple[int, int], multiple: int) -> tuple[int, int]:
    """(H, W) rounded up to ``multiple``."""
    m = max(1, int(multiple))
    return math.ceil(hw[0] / m) * m, math.ceil(hw[1] / m) * m


def resize_for_inference(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Resize a frame (any channel count, uint8/uint16/float) by ``scale`` (no-op at
    1.0); INTER_AREA when shrinking, else INTER_LINEAR."""
    if scale == 1.0:
        return rgb
    h, w = scaled_hw(rgb.shape[:2], scale)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def pad_to(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pad ``(H, W, C)`` at the bottom/right to ``hw`` (reflected, constant 0 if too small)."""
    h, w = rgb.shape[:2]
    ph, pw = hw[0] - h, hw[1] - w
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad an image of shape {rgb.shape} to {hw}")
    if ph == 0 and pw == 0:
        return rgb
    border = cv2.BORDER_REFLECT_101 if ph < h and pw < w else cv2.BORDER_CONSTANT
    return cv2.copyMakeBorder(rgb, 0, ph, 0, pw, border, value=0)


def to_nchw(images: Sequence[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """Stack float RGB ``(h, w, 3)`` images (each h, w <= hw) into padded (N, 3, H, W)."""
    if not images:
        raise ValueError("empty batch")
    batch = np.empty((len(images), 3, hw[0], hw[1]), dtype=np.float32)
    for i, img in enumerate(images):
        batch[i] = pad_to(img, hw).transpose(2, 0, 1)
    return batch


def flip_averaged(infer: Callable[[np.ndarray], np.ndarray], nchw: np.ndarray,
                  logits: np.ndarray) -> np.ndarray:
    r"""The network's output on ``nchw`` averaged with its output on the batch mirrored
    left-right, mirrored back:

    .. math::

        \bar z = \tfrac{1}{2}\left(f(x) + M f(M x)\right)

    with :math:`M` the left-right mirror and ``logits`` :math:`= f(x)`, already computed.
    A trained network is not exactly mirror-symmetric (its filters are not), so the two
    views err differently at crystal boundaries and their mean errs less: on generated
    frames crystal IoU twins 0.913 -> 0.920, needles 0.758 -> 0.775, 5 um/px 0.894 ->
    0.900 (``models/README.md``); mirroring up-down as well (four views) gained nothing
    more. The price is a second inference per frame.
    """
    mirrored = infer(np.ascontiguousarray(nchw[..., ::-1]))
    if mirrored.shape != logits.shape:
        raise ValueError(f"the mirrored batch gave logits of shape {mirrored.shape}, the batch "
                         f"{logits.shape}")
    return (logits.astype(np.float32) + mirrored[..., ::-1].astype(np.float32)) * 0.5


def logits_to_class_maps(logits: np.ndarray, sizes: Sequence[tuple[int, int]], *,
                         n_classes: int | None = None) -> list[np.ndarray]:
    """Arg-max over classes, cropped to each image's (h, w); uint8 class maps.

    ``n_classes``: the class channels are the first ``n_classes`` (auxiliary channels such
    as ``contact`` follow them and take no part in the arg-max); None = every channel.
    """
    if logits.ndim != 4 or logits.shape[0] != len(sizes):
        raise ValueError(f"logits of shape {logits.shape} do not match {len(sizes)} images")
    k = logits.shape[1] if n_classes is None else int(n_classes)
    out = []
    for i, (h, w) in enumerate(sizes):
        out.append(np.ascontiguousarray(logits[i, :k, :h, :w].argmax(axis=0).astype(np.uint8)))
    return out


def upsample_class_map(class_map: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    r"""A class map at frame size ``hw`` (``--masks-out``; measurements use the map at
    inference resolution).

    A map that carries its class logits :math:`z_k`
    (:func:`edge.vision.contact.with_class_logits`) is resized through them, each
    channel as an image (bilinear when enlarging, area when shrinking),

    .. math:: C'(p) = \arg\max_k \, R[z_k](p),

    so an outline falls between the map's pixels where the logits cross; on generated
    frames of 1.45 um/px segmented at half size, crystal IoU against the true masks
    rises from 0.955 (the map resized as a label) to 0.970 on compact crystals and from
    0.799 to 0.821 on needles. Without logits the map is resized as :func:`resize_label`
    does.
    """
    if class_map.shape[:2] == tuple(hw):
        return np.asarray(class_map)
    logits = getattr(class_map, "class_logits", None)
    if logits is None:
        return resize_label(np.asarray(class_map), (hw[1], hw[0]))
    h, w = int(hw[0]), int(hw[1])
    interp = cv2.INTER_AREA if h < class_map.shape[0] and w < class_map.shape[1] \
        else cv2.INTER_LINEAR
    up = [cv2.resize(np.asarray(c, np.float32), (w, h), interpolation=interp) for c in logits]
    return np.argmax(np.stack(up), axis=0).astype(np.asarray(class_map).dtype)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    r"""A label map (one integer value per pixel) resized to ``size`` (width, height).

    Each target pixel takes the value that covers the largest share of it: every value's
    indicator is resized as an image (area average when shrinking, bilinear when
    enlarging, both with pixel centres aligned) and the arg-max is taken,

    .. math:: L'(p) = \arg\max_v \, R[\mathbb{1}(L = v)](p),

    ties (an even shrink splits a target pixel two to two) going to each value on
    alternate pixels (by the parity of x + y), so a tied edge is dithered rather than
    always moved towards one side. Nearest-neighbour shrinking (``cv2.INTER_NEAREST``)
    takes each target pixel's top-left source pixel instead, which moves every outline
    by a quarter target pixel at a factor of 2 and drops or widens thin parts at random.

    Parameters
    ----------
    label : numpy.ndarray
        ``(H, W)`` integer map (class ids, an ignore value, packed bits: every distinct
        value is one label).
    size : (int, int)
        Target (width, height), OpenCV's order.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` map of the same dtype holding only values of ``label``.
    """
    if label.ndim != 2:
        raise ValueError(f"label must be (H, W), got shape {label.shape}")
    w, h = int(size[0]), int(size[1])
    if (h, w) == label.shape:
        return label
    values = np.unique(label)
    if values.size == 1:
        return np.full((h, w), values[0], label.dtype)
    shrink = w < label.shape[1] and h < label.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    parity = np.add.outer(np.arange(h), np.arange(w)) % values.size
    best = np.full((h, w), -1.0, np.float32)
    out = np.empty((h, w), label.dtype)
    for rank, v in enumerate(values):
        share = cv2.resize((label == v).astype(np.float32), (w, h), interpolation=interp)
        score = share + 1e-4 * ((parity + rank) % values.size)
        take = score > best
        out[take] = v
        best[take] = score[take]
    return out
