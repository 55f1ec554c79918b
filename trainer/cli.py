"""``crystal-train``: synthetic data, dataset checks, class weights, training, export.

Commands are listed explicitly here (name -> module); see :mod:`edge.clikit`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from edge.clikit import dispatch

COMMANDS: dict[str, str] = {
    "check-data": "trainer.commands.check_data",
    "synth": "trainer.commands.synth",
    "weights": "trainer.commands.weights",
    "train": "trainer.commands.train",
    "evaluate": "trainer.commands.evaluate",
    "export": "trainer.commands.export",
    "adapt": "trainer.commands.adapt",
    "blend": "trainer.commands.blend",
    "resample": "trainer.commands.resample",
    "labels-to-coco": "trainer.commands.labels_to_coco",
    "coco-to-labels": "trainer.commands.coco_to_labels",
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(
        "crystal-train", "Train and export crystal segmentation models.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
