"""Labelled microscope datasets: the folder format, a validating reader, split and crops.

A dataset is a folder::

    DIR/images/<stem>.png|jpg|tif|bmp   8-bit (or 16-bit, converted) camera frames
    DIR/labels/<stem>.png|tif|bmp       class labels, same height and width
    DIR/classes.json                    the classes and how they are stored on disk

``classes.json``::

    {"classes": [{"id": 0, "name": "black_background"},
                 {"id": 1, "name": "light_background"},
                 {"id": 2, "name": "crystal"}],
     "crystal_class": 2,
     "px_size_um": 1.45,
     "palette": {"black_background": [0, 0, 128], ...}}      (optional)

``id`` is the value stored in single-channel label images (MATLAB's Image Labeler
writes 1-based ids to ``PixelLabelData``: then ids are 1, 2, 3). ``palette`` is needed
only when labels are RGB colour maps; ``crystal_class`` is an ``id`` or a class name.
The reader maps whatever is on disk to contiguous class ids ``0..K-1`` in the order of
``classes`` (the network's channel order). Only numpy and OpenCV are needed here.
"""

from trainer.data.classes import (
    CLASSES_FILE,
    ClassesFile,
    ClassSpec,
    load_classes,
    write_classes,
)
from trainer.data.crops import (
    CROP_KINDS,
    crop_central_quarter,
    crop_cornered_quarter,
    crop_lens_square,
    crop_whole,
    field_box,
    lens_square_side,
    make_crops,
)
from trainer.data.files import decode_label, read_image, read_label
from trainer.data.reader import (
    IMAGE_EXTS,
    LABEL_EXTS,
    DataIssue,
    DataReport,
    LabelledDataset,
    Pair,
    split_indices,
)

__all__ = [
    "CLASSES_FILE", "CROP_KINDS", "IMAGE_EXTS", "LABEL_EXTS", "ClassSpec", "ClassesFile",
    "DataIssue", "DataReport",
    "LabelledDataset", "Pair", "crop_central_quarter", "crop_cornered_quarter",
    "crop_lens_square", "crop_whole", "decode_label", "field_box", "lens_square_side",
    "load_classes", "make_crops", "read_image", "read_label", "split_indices",
    "write_classes",
]
