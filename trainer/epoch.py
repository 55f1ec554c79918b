"""The training epochs: the loop, and the end of each (validation, log line, checkpoints,
metric files, plot).

:class:`Progress` is what the loop carries from epoch to epoch (and a checkpoint
restores); :class:`Run` holds the fixed parts of the run. :func:`run_epochs` runs on
every process; only the main process calls :func:`end_of_epoch`.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("trainer.train")


@dataclass
class Progress:
    """What the loop carries from epoch to epoch and what a checkpoint restores."""

    start_epoch: int = 0
    step: int = 0
    best_acc: float = -1.0
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    step_rows: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resume(cls, ckpt: dict[str, Any] | None, optimizer: Any, scheduler: Any,
               scaler: Any) -> Progress:
        if ckpt is None:
            return cls()
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        return cls(start_epoch=int(ckpt["epoch"]) + 1, step=int(ckpt.get("step", 0)),
                   best_acc=float(ckpt.get("best_accuracy", -1.0)),
                   epoch_rows=list(ckpt.get("epoch_rows", [])),
                   step_rows=list(ckpt.get("step_rows", [])))


def run_epochs(args: argparse.Namespace, run: Run, prog: Progress, *, model: Any,
               train_ds: Any, sampler: Any, train_loader: Any, total_steps: int,
               contact_loss: Any, main_proc: bool) -> int:
    """Train from ``prog.start_epoch`` to ``args.epochs``, ending early at ``total_steps``
    or after ``args.max_minutes``; the last epoch begun (``prog.start_epoch - 1``: none).

    ``model`` is the network as trained (DDP-wrapped when distributed; ``run.bare`` is
    the network itself). Every rank stops at the same epoch, so that DDP stays in step.
    """
    from trainer.engine import any_rank, train_one_epoch

    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    epoch = prog.start_epoch - 1
    for epoch in range(prog.start_epoch, args.epochs):
        if prog.step >= total_steps or (
                deadline is not None and any_rank(time.monotonic() > deadline, run.device)):
            break
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0 = time.monotonic()
        tm = train_one_epoch(model, run.criterion, run.optimizer, train_loader, run.device,
                             epoch=epoch, n_classes=run.n_classes, scheduler=run.scheduler,
                             scaler=run.scaler, max_steps=total_steps, step0=prog.step,
                             on_step=prog.step_rows.append,
                             progress=main_proc and not args.no_progress, deadline=deadline,
                             contact_loss=contact_loss,
                             train_body=not (args.contact_only or args.refine_only))
        prog.step += tm["steps"]
        if main_proc:
            end_of_epoch(run, prog, epoch=epoch, tm=tm, t0=t0)
    return epoch


def end_of_epoch(run: Run, prog: Progress, *, epoch: int, tm: dict[str, Any],
                  t0: float) -> None:
    """Validate, log, write the checkpoints, the CSVs and the plot (main process only)."""
    import torch

    from trainer.engine import evaluate
    from trainer.runfiles import flat_metrics, fmt, write_csv
    from trainer.trainplot import plot_training

    names = run.class_names
    vm = (evaluate(run.bare, run.criterion, run.val_loader, run.device,
                   n_classes=run.n_classes, class_names=names, amp=run.scaler is not None)
          if run.val_loader is not None else {})
    row = {"epoch": epoch, "step": prog.step, "lr": run.optimizer.param_groups[0]["lr"],
           "seconds": round(time.monotonic() - t0, 2)}
    tm["iou"] = dict(zip(names, tm["iou"].values(), strict=True))
    row.update(flat_metrics("train", tm))
    row.update(flat_metrics("val", vm))
    prog.epoch_rows.append(row)
    score = vm.get("pixel_accuracy") if vm else tm.get("pixel_accuracy")
    log.info("epoch %d step %d: train loss %.4f acc %.4f | val loss %s acc %s crystal IoU %s",
             epoch, prog.step, tm["loss"], tm["pixel_accuracy"] or float("nan"),
             fmt(vm.get("loss")), fmt(vm.get("pixel_accuracy")),
             fmt((vm.get("iou") or {}).get(names[run.crystal_class])))
    state = {
        "model": run.bare.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch, "step": prog.step, "config": run.config,
        "class_weights": None if run.cw is None else [float(v) for v in run.cw],
        "class_weights_summary": run.cw_summary, "best_accuracy": prog.best_acc,
        "epoch_rows": prog.epoch_rows, "step_rows": prog.step_rows,
        "metrics": {"val": vm, "train": tm},
    }
    if score is not None and score > prog.best_acc:
        prog.best_acc = float(score)
        state["best_accuracy"] = prog.best_acc
        prog.best_metrics = {"epoch": epoch, "step": prog.step, "val": vm, "train": tm}
        torch.save(state, run.out / "best.pt")
    torch.save(state, run.out / "checkpoint.pt")
    write_csv(run.out / "metrics.csv", prog.epoch_rows)
    write_csv(run.out / "steps.csv", prog.step_rows)
    try:
        plot_training(prog.step_rows, prog.epoch_rows, run.out / "training.png")
    except Exception as exc:  # a plot must never stop training
        log.warning("training plot not written: %s", exc)


@dataclass
class Run:
    """The fixed parts of one training run, as :func:`end_of_epoch` needs them."""

    out: Path
    bare: Any
    criterion: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    val_loader: Any
    device: Any
    n_classes: int
    class_names: list[str]
    crystal_class: int
    config: dict[str, Any]
    cw: np.ndarray | None
    cw_summary: dict[str, Any]
