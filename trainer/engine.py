"""Training and evaluation loops and the segmentation metrics (torchvision reference layout).

Metrics come from one confusion matrix (rows: true class, columns: predicted class;
pixels labelled with the ignore index are not counted):

- pixel accuracy = trace / sum (the study's "accuracy", Eq. 3, over all classes),
- IoU of class k = C[k,k] / (row_k + col_k - C[k,k]) (NaN when the class is absent
  from both truth and prediction).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.augment import IGNORE_INDEX

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- DDP
def any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` OR-ed over all processes (a collective under DDP, ``flag`` itself otherwise).

    Every decision that changes how many optimizer steps a process takes (time box,
    skipped batch) must be taken by all processes together: one process stepping alone
    waits forever in DDP's gradient all-reduce.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ----------------------------------------------------------------------------- metrics
def confusion_matrix(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                     n_classes: int, *, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrix ``(K, K)`` int64, rows = true class, columns = predicted class.

    Parameters
    ----------
    pred, target : array-like of int
        Predicted and true class ids of the same shape.
    n_classes : int
        ``K``.
    ignore_index : int
        Target value not counted (padding, unlabelled).
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().numpy()
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    keep = target != ignore_index
    t = target[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"class ids outside 0..{n_classes - 1} (target {t.min()}..{t.max()}, "
                         f"pred {p.min()}..{p.max()})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def metrics_from_confusion(cm: np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU, mean IoU and per-class accuracy from a confusion matrix.

    Returns plain JSON types; absent classes get ``None`` IoU and are left out of the mean.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    total = cm.sum()
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    rows = cm.sum(1)
    iou = [float(tp[i] / union[i]) if union[i] > 0 else None for i in range(k)]
    acc_c = [float(tp[i] / rows[i]) if rows[i] > 0 else None for i in range(k)]
    valid = [v for v in iou if v is not None]
    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else None,
        "iou": dict(zip(names, iou, strict=True)),
        "class_accuracy": dict(zip(names, acc_c, strict=True)),
        "mean_iou": float(np.mean(valid)) if valid else None,
        "pixels": int(total),
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


# ----------------------------------------------------------------------------- loops
def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16,
                          enabled=enabled and device.type == "cuda")


def _train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                images: torch.Tensor, targets: torch.Tensor, *, contact: torch.Tensor | None,
                n_classes: int, device: torch.device, scaler: torch.amp.GradScaler | None,
                contact_loss: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; the loss and the class logits."""
    with _autocast(device, scaler is not None):
        out = model(images)
        logits = out[:, :n_classes]
        loss = criterion(logits.float(), targets)
        if contact_loss is not None:
            loss = loss + contact_loss(out[:, n_classes].float(), contact)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, logits


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    loader, device: torch.device, *, epoch: int, n_classes: int,
                    scheduler=None, scaler: torch.amp.GradScaler | None = None,
                    max_steps: int | None = None, step0: int = 0,
                    on_step: Callable[[dict[str, Any]], None] | None = None,
                    progress: bool = False, deadline: float | None = None,
                    contact_loss: nn.Module | None = None,
                    train_body: bool = True) -> dict[str, Any]:
    """Train for one pass over ``loader`` (or until ``max_steps`` / ``deadline``).

    The class loss ``criterion`` and the metrics see the first ``n_classes`` channels;
    with ``contact_loss`` (:class:`ContactLoss`) the batches are ``(x, y, contact)`` and
    channel ``n_classes`` is the contact logit, whose loss is added.

    Parameters
    ----------
    step0 : int
        Global step count before this epoch (for ``max_steps`` and the per-step log).
    on_step : callable, optional
        Called with ``{'step', 'epoch', 'loss', 'accuracy', 'lr'}`` after every step.
    deadline : float, optional
        ``time.monotonic()`` value after which the epoch stops early.
    train_body : bool
        False keeps ``model`` in evaluation mode (batch norms frozen), for a run that
        learns only the auxiliary channels (:func:`trainer.model.train_only_aux`).

    Returns
    -------
    dict
        ``loss`` (mean), ``pixel_accuracy``, ``iou`` per class, ``steps`` done, ``stopped``.
    """
    model.train(train_body)
    cm = np.zeros((n_classes, n_classes), np.int64)
    loss_sum, n = 0.0, 0
    step = step0
    stopped = False
    it = loader
    if progress:
        from tqdm import tqdm
        it = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    for batch in it:
        if max_steps is not None and step >= max_steps:
            stopped = True
            break
        if deadline is not None and any_rank(time.monotonic() > deadline, device):
            stopped = True
            break
        images = batch[0].to(device, non_blocking=True)
        targets = batch[1].to(device, non_blocking=True)
        if any_rank(not bool((targets != IGNORE_INDEX).any()), device):
            log.debug("step skipped: every pixel of the batch (on some process) is padding")
            continue
        contact = batch[2].to(device, non_blocking=True) if contact_loss is not None else None
        loss, logits = _train_step(model, criterion, optimizer, images, targets,
                                   contact=contact, n_classes=n_classes, device=device,
                                   scaler=scaler, contact_loss=contact_loss)
        if scheduler is not None:
            scheduler.step()
        step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss is {lv} at step {step}; lower --lr")
        bcm = confusion_matrix(logits.detach().argmax(1), targets, n_classes)
        cm += bcm
        loss_sum += lv
        n += 1
        bacc = float(np.trace(bcm) / max(bcm.sum(), 1))
        rec = {"step": step, "epoch": epoch, "loss": lv, "accuracy": bacc,
               "lr": float(optimizer.param_groups[0]["lr"])}
        if progress:
            it.set_postfix(loss=f"{lv:.4f}", acc=f"{bacc:.4f}")
        if on_step is not None:
            on_step(rec)
    out = metrics_from_confusion(cm)
    out.update({"loss": loss_sum / n if n else float("nan"), "steps": n, "stopped": stopped})
    return out


@torch.no_grad()
def evaluate(model: nn.Module, criterion: nn.Module | None, loader, device: torch.device, *,
             n_classes: int, class_names: list[str] | None = None,
             amp: bool = False) -> dict[str, Any]:
    """Loss and confusion-matrix metrics of ``model`` over ``loader`` (no gradient)."""
    model.eval()
    cm = np.zeros((n_classes, n_classes), np.int64)
    loss_sum, n = 0.0, 0
    for batch in loader:
        images = batch[0].to(device, non_blocking=True)
        targets = batch[1].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)[:, :n_classes]  # auxiliary channels follow the classes
        if criterion is not None:
            loss_sum += float(criterion(logits.float(), targets))
            n += 1
        cm += confusion_matrix(logits.argmax(1), targets, n_classes)
    out = metrics_from_confusion(cm, class_names)
    out["loss"] = loss_sum / n if n else None
    return out


class CELovasz(nn.Module):
    """Weighted cross-entropy plus ``lovasz_weight`` x the Lovasz-softmax loss.

    The Lovasz-softmax loss (Berman et al., CVPR 2018; segmentation-models-pytorch's
    implementation) is a convex surrogate of the per-class IoU. It is applied to the
    *prior-corrected* logits (raw logits ``- log w_c``, :func:`trainer.model.prior_correction`),
    i.e. to the decision the exported model makes, while the weighted cross-entropy keeps
    shaping the raw logits as it always does.
    """

    def __init__(self, ce: nn.Module, class_weights, lovasz_weight: float, *,
                 ignore_index: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import LovaszLoss

        from trainer.model import prior_correction

        adj = torch.zeros(1) if class_weights is None else \
            torch.from_numpy(prior_correction(class_weights))
        self.ce = ce
        self.lovasz = LovaszLoss("multiclass", ignore_index=ignore_index)
        self.lovasz_weight = float(lovasz_weight)
        self.register_buffer("adj", adj.view(1, -1, 1, 1).to(device))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, targets) + self.lovasz_weight * self.lovasz(logits + self.adj,
                                                                           targets)


class ContactLoss(nn.Module):
    """``weight`` x binary cross-entropy with logits of the contact channel.

    ``L = -mean over labelled pixels of [w_pos * t * log s(z) + (1 - t) * log(1 - s(z))]``
    with ``s`` the sigmoid, ``t`` the 0/1 contact label and ``w_pos`` (``pos_weight``) the
    up-weighting of the rare contact pixels; pixels labelled ``ignore_index`` (outside
    the source frame after augmentation) do not count.
    """

    def __init__(self, weight: float, pos_weight: float = 1.0, *,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if weight < 0 or pos_weight <= 0:
            raise ValueError(f"contact weight must be >= 0 and pos_weight > 0, got {weight}, "
                             f"{pos_weight}")
        self.weight = float(weight)
        self.ignore_index = int(ignore_index)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logit.sum() * 0.0
        t = (target[valid] == 1).to(logit.dtype)
        bce = nn.functional.binary_cross_entropy_with_logits(
            logit[valid], t, pos_weight=self.pos_weight.to(logit.device))
        return self.weight * bce


def contact_pos_weight(data, *, max_frames: int = 64, cap: float = 50.0) -> float:
    """``pos_weight`` of :class:`ContactLoss` for a dataset: ``sqrt(negatives / positives)``
    of its contact labels (the first ``max_frames``), clipped to ``[1, cap]``.

    The square root balances the gradients halfway: full ``neg / pos`` (~100 for contact
    lines) would move the 0.5 decision to a probability of ~1 % and swallow markers.
    """
    pos = neg = 0
    for i in range(min(len(data), max_frames)):
        con = data.load_contact(i)
        if con is None:
            continue
        k = int(np.count_nonzero(con))
        pos, neg = pos + k, neg + con.size - k
    if pos == 0:
        return 1.0
    return float(np.clip(math.sqrt(neg / pos), 1.0, cap))


def make_contact_loss(weight: float, data, *, device: torch.device | str = "cpu"
                      ) -> ContactLoss | None:
    """The contact channel's loss for ``--contact-weight`` (None for 0), with
    :func:`contact_pos_weight` of ``data``; UserError when frames lack contact labels."""
    if not weight > 0:
        return None
    from edge.errors import UserError
    from trainer.data.reader import CONTACTS_DIR

    if not data.has_contacts:
        raise UserError(f"--contact-weight {weight:g}: {data.root}/{CONTACTS_DIR}/<stem>.png "
                        "missing for some frames (crystal-train synth writes them)")
    pos_weight = contact_pos_weight(data)
    log.info("contact channel: weight %g, pos_weight %.2f", weight, pos_weight)
    return ContactLoss(weight, pos_weight).to(device)


def make_criterion(class_weights: np.ndarray | None, *, ignore_index: int = IGNORE_INDEX,
                   device: torch.device | str = "cpu", lovasz_weight: float = 0.0) -> nn.Module:
    """Cross-entropy, weighted by ``class_weights`` when given, ignoring padding.

    With ``lovasz_weight > 0``, plus that multiple of the Lovasz-softmax IoU loss on the
    prior-corrected logits (:class:`CELovasz`).
    """
    if lovasz_weight < 0:
        raise ValueError(f"lovasz_weight must be >= 0, got {lovasz_weight}")
    w = None
    if class_weights is not None:
        w = torch.as_tensor(np.asarray(class_weights, dtype=np.float32), device=device)
    ce = nn.CrossEntropyLoss(weight=w, ignore_index=ignore_index)
    if lovasz_weight > 0:
        return CELovasz(ce, class_weights, lovasz_weight, ignore_index=ignore_index,
                        device=device)
    return ce
