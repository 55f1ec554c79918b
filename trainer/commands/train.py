"""``crystal-train train``: train DeepLabV3+ (ResNet-50 by default) on a labelled dataset."""

from __future__ import annotations

import argparse

HELP = "train the segmentation network (DeepLabV3+/ResNet) on a labelled dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trainer.trainargs import add_train_arguments

    add_train_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from trainer.train import main

    summary = main(args)
    return 0 if summary.get("steps", 0) > 0 or summary.get("epochs_done", 0) > 0 else 1
