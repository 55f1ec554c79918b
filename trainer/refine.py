"""Outline refinement at the network's input resolution: the head, its spec, its training.

DeepLabV3+ predicts at a quarter of its input resolution and enlarges the logits
bilinearly, so an outline is placed on a 4-pixel grid: at 2.9 um per network pixel a
needle 3-10 pixels wide is one to three logit cells across, and its outline is wrong by
about a pixel all round (crystal IoU 0.76 on needles where compact crystals reach
0.94). :class:`RefineHead` is a small stack of convolutions at full input resolution
that reads the normalised image beside the class probabilities and the contact
probability and adds a correction to the class logits:

.. math::

    z' = z + f_\\theta\\big(\\tilde x,\\ \\mathrm{softmax}(z),\\ \\sigma(z_{contact})\\big)

where :math:`z` are the network's class logits, :math:`\\tilde x` the normalised image
and :math:`f_\\theta` the head (last layer zero at start, so a new head is the identity).
The auxiliary channels pass through unchanged. The head sits before the prior
correction (:func:`trainer.model.set_prior_correction`), so it trains with the same
weighted loss as the rest of the network and the export adds the correction after it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edge.errors import UserError

#: The head ``crystal-train train --refine`` adds: 4 layers of 16 channels, 3 x 3
#: kernels (a receptive field of 9 network pixels, 26 um at 2.9 um/px; 6.1 k weights).
DEFAULT_SPEC: dict[str, int] = {"channels": 16, "layers": 4, "kernel": 3}
_LIMITS = {"channels": (4, 64), "layers": (2, 8), "kernel": (3, 5)}


def check_spec(spec: Any, *, where: str = "architecture.refine") -> dict[str, int]:
    """``spec`` as a plain dict of ints; :class:`UserError` naming ``where`` and the field
    when a field is missing, not an integer, out of range, or the kernel is even."""
    if not isinstance(spec, dict) or set(spec) != set(DEFAULT_SPEC):
        raise UserError(f"{where}: expected the fields {sorted(DEFAULT_SPEC)}, got {spec!r}")
    out: dict[str, int] = {}
    for key, (lo, hi) in _LIMITS.items():
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise UserError(f"{where}.{key}: {value!r} is not an integer in {lo}..{hi}")
        out[key] = value
    if out["kernel"] % 2 == 0:
        raise UserError(f"{where}.kernel: {out['kernel']} must be odd")
    return out


class RefineHead(nn.Module):
    """Full-resolution correction of the class logits (see the module text).

    Parameters
    ----------
    n_classes : int
        Class logits the head corrects (the first channels of the network's output).
    n_aux : int
        Auxiliary channels after them (``contact``); read as probabilities, passed through.
    channels, layers, kernel : int
        Width, depth (convolutions, the last one included) and kernel of the head.
    """

    def __init__(self, n_classes: int, n_aux: int = 0, *, channels: int = 16,
                 layers: int = 4, kernel: int = 3) -> None:
        super().__init__()
        check_spec({"channels": channels, "layers": layers, "kernel": kernel})
        self.n_classes, self.n_aux = int(n_classes), int(n_aux)
        self.spec = {"channels": channels, "layers": layers, "kernel": kernel}
        body: list[nn.Module] = []
        width = 3 + self.n_classes + self.n_aux
        for _ in range(layers - 1):
            body += [nn.Conv2d(width, channels, kernel, padding=kernel // 2), nn.ReLU()]
            width = channels
        self.body = nn.Sequential(*body)
        self.out = nn.Conv2d(width, self.n_classes, kernel, padding=kernel // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, n_classes + n_aux, H, W) with the class channels corrected;
        ``image`` is the normalised network input (N, 3, H, W)."""
        c = self.n_classes
        parts = [image, torch.softmax(logits[:, :c], 1)]
        if self.n_aux:
            parts.append(torch.sigmoid(logits[:, c:]))
        refined = logits[:, :c] + self.out(self.body(torch.cat(parts, 1)))
        return torch.cat([refined, logits[:, c:]], 1) if self.n_aux else refined


def train_only_refine(model: nn.Module) -> list[nn.Parameter]:
    """Freeze ``model`` except its :class:`RefineHead`; returns the head's parameters.

    The network stays in evaluation mode (the caller's ``train_body=False``), so its
    batch norms keep their statistics and the head learns on the logits inference
    computes; only the head is differentiated, so a step costs about one forward pass.
    """
    head = getattr(model, "refine", None)
    if head is None:
        raise ValueError("the model has no refine head")
    for p in model.parameters():
        p.requires_grad_(False)
    keep = list(head.parameters())
    for p in keep:
        p.requires_grad_(True)
    model.needs_bn_calibration = False  # evaluation mode throughout: nothing to calibrate
    return keep
