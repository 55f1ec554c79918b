"""A hand-made ONNX with a ``contact`` channel, and a frame with two touching crystals.

The model extends the pattern of ``tests/fixtures/tiny_model.py`` (three class logits
linear in the grey value ``g = (R + G + B) / 3``) by a fourth logit that reads colour,
not brightness::

    contact  l3 = k * (R - G - 0.2)

so it is positive only where red exceeds green by a fifth of the range. The frame draws
two dark discs that overlap deeply (one convex-looking outline: the distance-map split
and the convexity rule keep it whole) and paints the chord between them red-shifted at
the *same* grey value: the class map does not change, the contact channel marks the line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.modelmeta import ClassInfo, InputSpec, ModelMeta, OutputSpec, sha256_file, write_meta
from tests.fixtures.tiny_model import CLASSES, synth_frame

DARK, BRIGHT, GAIN = 0.12, 0.55, 40.0


def build_contact_model(directory: str | Path, *, name: str = "contact-seg",
                        px_size_um: float = 1.45, declare: bool = True) -> Path:
    """Write ``<name>.onnx`` (4 output channels) + metadata; ``declare=False`` leaves the
    channel out of the metadata (a model that disagrees with it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.onnx"
    w = np.zeros((4, 3, 1, 1), np.float32)
    b = np.zeros(4, np.float32)
    w[0, :, 0, 0], b[0] = -GAIN / 3, GAIN * DARK
    w[1, :, 0, 0], b[1] = GAIN / 3, -GAIN * BRIGHT
    w[3, 0, 0, 0], w[3, 1, 0, 0], b[3] = GAIN, -GAIN, -0.2 * GAIN  # input is RGB
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"], kernel_shape=[1, 1])],
        name,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    write_meta(ModelMeta(
        name=name, onnx_file=path.name, sha256=sha256_file(path), opset=17,
        classes=[ClassInfo(id=i, name=n) for i, n in CLASSES], crystal_class_id=2,
        input=InputSpec(size_multiple=16),
        output=OutputSpec(aux_channels=["contact"] if declare else []),
        px_size_um=px_size_um, architecture={"name": "tiny-threshold-contact"}), path)
    return path


def touching_pair(*, r: float = 24.0, d_rel: float = 0.7, level: int = 70,
                  hw: tuple[int, int] = (160, 192)) -> tuple[np.ndarray, np.ndarray]:
    """BGR frame with two discs of radius ``r`` at centre distance ``d_rel * r`` and the
    chord between them painted (B, G, R) = (level - 30, level - 30, level + 60); returns
    the frame and the union mask of the discs."""
    h, w = hw
    cx, cy, d = w / 2.0, h / 2.0, d_rel * r
    discs = [(cx - d / 2, cy, r), (cx + d / 2, cy, r)]
    img = synth_frame(h, w, crystals=discs, crystal_level=level, noise=0.0)
    union = img[..., 0] < (level + 200) // 2  # the discs as drawn
    xx = np.arange(w)[None, :]
    line = union & (np.abs(xx - cx) <= 1.5)
    img[line] = (level - 30, level - 30, level + 60)
    return img, union
