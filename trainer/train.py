"""Train DeepLabV3+ (ResNet encoder) on a labelled dataset: ``crystal-train train``.

Layout of the torchvision reference scripts: :func:`get_args_parser`, :func:`main`, with
the epoch loop in :func:`trainer.epoch.run_epochs` around
:func:`trainer.engine.train_one_epoch` and :func:`trainer.engine.evaluate`. Multi-GPU
through ``torchrun`` (DDP with a DistributedSampler) when ``WORLD_SIZE > 1``; nothing
changes for the user.

A run directory holds ``config.json``, ``class_weights.json``, ``metrics.csv`` (one row
per epoch), ``steps.csv`` (one row per iteration), ``training.png`` (the study's Fig. 3),
``checkpoint.pt`` (latest, for ``--resume``) and ``best.pt`` (best validation accuracy).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from trainer.trainargs import DEFAULT_VAL_FRACTION, add_train_arguments, check_args

log = logging.getLogger(__name__)

#: Training crops whose statistics the batch norms of an imported ONNX model get.
BN_CALIBRATION_CROPS = 32


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The argument parser (torchvision reference style)."""
    p = argparse.ArgumentParser(description="Train a crystal segmentation model", add_help=add_help)
    return add_train_arguments(p)


# ----------------------------------------------------------------------------- helpers
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def select_device(name: str, local_rank: int = 0):
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def compute_class_weights(data) -> tuple[np.ndarray, dict[str, Any]]:
    """Median-frequency class weights of a training set (the study's Table 2).

    Uses :mod:`trainer.weights`; returns the weights and a JSON summary.
    """
    from trainer.weights import class_pixel_stats

    cw = class_pixel_stats(data)
    log.info("class weights (median frequency) of %s:\n%s", data.root, cw.table())
    return np.asarray(cw.weights, dtype=np.float64), cw.to_payload()


def lr_lambda_factory(warmup: int, total: int):
    """Linear warm-up, then cosine decay to 1 % of the peak at ``total`` steps."""
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if total <= warmup:
            return 1.0
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
    return f


def _load_datasets(args):
    from trainer.data import LabelledDataset

    train = LabelledDataset(args.data)
    if train.issues:
        for issue in train.issues[:5]:
            log.warning("skipping: %s", issue)
    if len(train) == 0:
        raise UserError(f"{args.data}: no image/label pairs")
    if args.val:
        val = LabelledDataset(args.val)
        if val.class_names != train.class_names:
            raise UserError(f"{args.val}: classes {val.class_names} differ from "
                            f"{args.data}'s {train.class_names}")
    elif len(train) >= 2:
        train, val = train.split(DEFAULT_VAL_FRACTION, seed=args.seed)
    else:
        val = None
    return train, val


def _data_summary(data) -> dict[str, Any]:
    if data is None:
        return {}
    return {"root": str(data.root), "n_frames": len(data), "px_size_um": data.px_size_um}


# ----------------------------------------------------------------------------- main
def _init_distributed(args: argparse.Namespace) -> tuple[Any, int, int, int]:
    """``(device, world, rank, local_rank)``; joins the process group under torchrun."""
    import torch

    world, rank, local_rank = _dist_info()
    device = select_device(args.device, local_rank)
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    torch.manual_seed(args.seed + rank)
    return device, world, rank, local_rank


def _load_resume(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--resume`` checkpoint (read with ``weights_only``), or None."""
    from trainer.model import load_torch_file

    if not args.resume:
        return None
    rpath = Path(args.resume)
    if not rpath.is_file():
        raise UserError(f"--resume {rpath}: checkpoint not found")
    ckpt = load_torch_file(rpath, label=f"--resume {rpath}", what="checkpoint")
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt:
        raise UserError(f"--resume {rpath}: not a training checkpoint")
    return ckpt


def _class_weights(args: argparse.Namespace, train_data: Any, ckpt: dict[str, Any] | None,
                   ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Class weights and their summary: from the checkpoint, none, or from the data."""
    if ckpt is not None:
        cw = np.asarray(ckpt["class_weights"]) if ckpt.get("class_weights") is not None else None
        return cw, ckpt.get("class_weights_summary", {})
    if args.contact_only or args.refine_only:
        # the network stays the file's, so does its prior correction
        from trainer.onnx_weights import class_weights_of, read_onnx_meta

        cw = class_weights_of(read_onnx_meta(args.weights), args.weights)
        return cw, {"weights": [float(v) for v in cw], "from": str(args.weights)}
    if args.no_class_weights:
        return None, {"weights": None}
    return compute_class_weights(train_data)


def _loaders(args: argparse.Namespace, model: Any, train_data: Any, val_data: Any, *,
             device: Any, world: int, local_rank: int, main_proc: bool,
             steps_per_epoch: int) -> tuple[Any, Any, Any, Any, Any]:
    """``(model, train_ds, sampler, train_loader, val_loader)``; DDP-wrapped when distributed.

    A model read from an exported ONNX file gets its batch norms calibrated on the same
    crops on every rank first, so that DDP replicas stay identical.
    """
    import torch
    from torch.utils.data import DataLoader

    from trainer.augment import PRESETS
    from trainer.onnx_weights import calibrate_on_crops
    from trainer.torchdata import EvalFrames, TrainCrops

    train_ds = TrainCrops(train_data, crop_size=args.image_size,
                          samples_per_epoch=steps_per_epoch * args.batch_size * world,
                          input_scale=args.input_scale, augment=PRESETS[args.augment],
                          seed=args.seed, contacts=args.contact_weight > 0,
                          scale_range=getattr(args, "scale_range", None))
    if getattr(model, "needs_bn_calibration", False):
        calibrate_on_crops(model, train_ds, BN_CALIBRATION_CROPS, args.batch_size, device)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    workers = max(0, args.workers)
    # Workers start afresh every epoch: a persistent worker keeps the copy of train_ds it
    # started with, whose epoch (set_epoch) and so whose crops would never change.
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=sampler is None,
                              sampler=sampler, num_workers=workers, drop_last=True,
                              pin_memory=device.type == "cuda", persistent_workers=False,
                              generator=torch.Generator().manual_seed(args.seed))
    val_loader = None
    if val_data is not None and main_proc:
        val_loader = DataLoader(EvalFrames(val_data, input_scale=args.input_scale),
                                batch_size=1, shuffle=False, num_workers=0)
    return model, train_ds, sampler, train_loader, val_loader


def _run_config(args: argparse.Namespace, train_data: Any, val_data: Any, *, px: float,
                steps_per_epoch: int, total_steps: int, world: int,
                head_kernel: int = 1, refine: dict | None = None) -> dict[str, Any]:
    """Everything that defines the run (``config.json``, the checkpoint's ``config``)."""
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)}
    config.update({
        "n_classes": train_data.n_classes, "classes": train_data.class_names,
        "crystal_class": train_data.crystal_class,
        "px_size_um_data": px, "px_size_um": px / args.input_scale, "size_multiple": 16,
        "architecture": {"name": "DeepLabV3Plus", "encoder": args.backbone,
                         "aspp_rates": list(args.aspp_rates), "output_stride": 16,
                         "library": "segmentation-models-pytorch",
                         # recorded only when not DeepLabV3+'s 1, so files stay comparable
                         **({"head_kernel": head_kernel} if head_kernel != 1 else {}),
                         **({"refine": refine} if refine else {})},
        "train_data": _data_summary(train_data), "val_data": _data_summary(val_data),
        "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "world_size": world,
        "aux_channels": aux_channels(args),
    })
    return config


def aux_channels(args: argparse.Namespace) -> list[str]:
    """The model's auxiliary output channels: ``['contact']`` with ``--contact-weight``;
    without it, those of a ``--weights`` ONNX file (the shipped model's contact channel),
    carried without a loss so that the fine-tune stays the same network as its source."""
    if getattr(args, "contact_weight", 0.0) > 0:
        return ["contact"]
    weights = str(getattr(args, "weights", "") or "")
    if weights.lower().endswith(".onnx"):
        from trainer.onnx_weights import read_onnx_meta

        return list((read_onnx_meta(weights).get("output") or {}).get("aux_channels") or [])
    return []


def _model(args: argparse.Namespace, n_classes: int, ckpt: dict[str, Any] | None,
           device: Any) -> Any:
    """The network on ``device``: from the checkpoint, or new (``--weights``)."""
    from trainer.model import build_model, count_parameters

    model = build_model(args.backbone, n_classes=n_classes, aspp_rates=args.aspp_rates,
                        weights="none" if ckpt is not None else args.weights,
                        n_aux=len(aux_channels(args)),
                        head_kernel=args.head_kernel if ckpt is None else
                        int(ckpt["config"]["architecture"].get("head_kernel", 1)),
                        refine=_refine_spec(args, ckpt))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    carried = [] if args.contact_weight > 0 or args.refine_only else aux_channels(args)
    if carried:
        log.warning("--weights %s: its %s channel is carried untrained (no --contact-weight): "
                    "the features it reads change with this training; check how touching "
                    "crystals are split (a channel gone quiet keeps concave agglomerates "
                    "whole: [measure] contact_clears_concave = false until it is taught "
                    "again), or teach it again with --contact-weight on frames with "
                    "contacts/ (scripts/contact_head.sh)", args.weights, carried[0])
    if args.contact_only:
        from trainer.model import train_only_aux

        train_only_aux(model, n_classes)
    if args.refine_only:
        from trainer.refine import train_only_refine

        train_only_refine(model)
    model.to(device)
    log.info("model DeepLabV3Plus/%s: %.1f M parameters, device %s",
             args.backbone, count_parameters(model) / 1e6, device)
    return model


def _refine_spec(args: argparse.Namespace, ckpt: dict[str, Any] | None) -> dict | None:
    """The refine head to build: the checkpoint's, or with ``--refine`` the default one
    (None: a ``--weights`` ONNX file's own, or none)."""
    if ckpt is not None:
        return ckpt["config"]["architecture"].get("refine")
    if not args.refine or _file_refine(args.weights) is not None:
        return None  # a file with a head keeps its own
    from trainer.refine import DEFAULT_SPEC

    return dict(DEFAULT_SPEC)


def _file_refine(weights: Any) -> dict | None:
    """The refine head spec of a ``--weights`` ONNX file (None: not a file, or no head)."""
    if not str(weights or "").lower().endswith(".onnx"):
        return None
    from trainer.onnx_weights import read_onnx_meta

    return read_onnx_meta(weights)["architecture"].get("refine")


def _optimisation(args: argparse.Namespace, model: Any, cw: np.ndarray | None, *,
                  device: Any, total_steps: int) -> tuple[Any, Any, Any, Any]:
    """``(criterion, optimizer, scheduler, scaler)``: AdamW, warm-up + cosine, AMP on CUDA."""
    import torch

    from trainer.engine import make_criterion

    criterion = make_criterion(cw, device=device, lovasz_weight=args.lovasz_weight)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=args.lr,
                                  weight_decay=0.0 if args.contact_only or args.refine_only
                                  else args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda_factory(args.warmup_steps, total_steps))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    return criterion, optimizer, scheduler, scaler


def _data_px_size(args: argparse.Namespace, train_data: Any) -> float:
    """Pixel size (um) of the training frames (classes.json; 1.45 with a warning)."""
    if train_data.px_size_um is None:
        log.warning("%s: classes.json has no px_size_um; assuming 1.45 um", args.data)
        return 1.45
    return float(train_data.px_size_um)


def _write_class_weights(out: Path, class_names: Any, cw: Any, cw_summary: Any) -> None:
    log.info("class weights %s: %s", class_names,
             None if cw is None else [round(float(v), 4) for v in cw])
    (out / "class_weights.json").write_text(json.dumps(cw_summary, indent=2) + "\n")


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train; returns a summary (best validation metrics, paths)."""
    from trainer.engine import make_contact_loss
    from trainer.epoch import Progress, Run, run_epochs
    from trainer.model import head_kernel_of, refine_spec_of
    from trainer.runfiles import fmt

    check_args(args)
    device, world, rank, local_rank = _init_distributed(args)
    main_proc = rank == 0
    out = Path(args.out)
    ckpt = _load_resume(args)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)

    train_data, val_data = _load_datasets(args)
    n_classes, class_names = train_data.n_classes, train_data.class_names
    px = _data_px_size(args, train_data)
    cw, cw_summary = _class_weights(args, train_data, ckpt)
    if main_proc:
        _write_class_weights(out, class_names, cw, cw_summary)

    model = _model(args, n_classes, ckpt, device)
    head_kernel = head_kernel_of(model)
    contact_loss = make_contact_loss(args.contact_weight, train_data, device=device)
    args.contact_pos_weight = None if contact_loss is None else float(contact_loss.pos_weight)

    steps_per_epoch = args.steps_per_epoch or max(1, math.ceil(len(train_data) / args.batch_size))
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    model, train_ds, sampler, train_loader, val_loader = _loaders(
        args, model, train_data, val_data, device=device, world=world, local_rank=local_rank,
        main_proc=main_proc, steps_per_epoch=steps_per_epoch)

    criterion, optimizer, scheduler, scaler = _optimisation(args, model, cw, device=device,
                                                            total_steps=total_steps)
    prog = Progress.resume(ckpt, optimizer, scheduler, scaler)
    if ckpt is not None:
        log.info("resumed from %s at epoch %d (step %d)", args.resume, prog.start_epoch,
                 prog.step)

    config = _run_config(args, train_data, val_data, px=px, steps_per_epoch=steps_per_epoch,
                         total_steps=total_steps, world=world, head_kernel=head_kernel,
                         refine=refine_spec_of(model))
    if main_proc:
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    run = Run(out=out, bare=model.module if world > 1 else model, criterion=criterion,
               optimizer=optimizer, scheduler=scheduler, scaler=scaler, val_loader=val_loader,
               device=device, n_classes=n_classes, class_names=class_names,
               crystal_class=train_data.crystal_class,
               config=config, cw=cw, cw_summary=cw_summary)
    epoch = run_epochs(args, run, prog, model=model, train_ds=train_ds, sampler=sampler,
                       train_loader=train_loader, total_steps=total_steps,
                       contact_loss=contact_loss, main_proc=main_proc)
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    summary = {"run": str(out), "epochs_done": epoch + 1, "steps": prog.step,
               "best_val_accuracy": prog.best_acc if prog.best_acc >= 0 else None,
               "best": prog.best_metrics}
    if main_proc:
        log.info("done: %d steps, best accuracy %s -> %s", prog.step,
                 fmt(summary["best_val_accuracy"]), out / "best.pt")
    return summary
