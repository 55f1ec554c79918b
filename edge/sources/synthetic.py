"""Synthetic source: frames from the trainer's generator, for demos and soak tests.

Frames are rendered by :mod:`trainer.synth` (numpy + OpenCV only, no torch), seeded so a
run is reproducible, optionally paced to ``rate_fps``. Each frame carries the
generator's ground truth in :attr:`~edge.sources.base.Frame.truth`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import UserError
from edge.sources.base import Frame, idle


class SyntheticSourceConfig(BaseModel):
    """``[source]`` with ``type = "synthetic"``: generated back-lit flow-cell frames."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["synthetic"] = Field("synthetic", description="source type")
    seed: int = Field(
        0, ge=0, description="random seed; frame i is the i-th frame of `crystal-train synth "
                             "--seed SEED` with the same settings")
    width: int = Field(1024, ge=64, le=8192, description="frame width in pixels")
    height: int = Field(768, ge=64, le=8192, description="frame height in pixels")
    count: int | None = Field(None, ge=1, description="frames to generate; None = endless")
    rate_fps: float | None = Field(
        None, gt=0, description="frames per second; None = as fast as they are taken")
    fraction_um: tuple[float, float] = Field(
        (125.0, 180.0), description="sieve fraction of the generated crystals (um)")
    px_size_um: float | None = Field(
        None, gt=0, description="pixel size of the generated frames; None = [optics] px_size_um")
    generator: dict[str, Any] = Field(
        default_factory=dict,
        description="further settings of the generator (trainer.synth.SynthConfig keys, "
                    "e.g. density, bubbles_per_frame); checked at start-up")


class SyntheticSource:
    """Generated frames (see the module docstring)."""

    name = "synthetic"

    def __init__(self, config: SyntheticSourceConfig, *,
                 state_dir: str | Path | None = None, px_size_um: float = 1.45) -> None:
        self.config = config
        self.px_size_um = config.px_size_um or px_size_um
        self._render: Any = None
        self._synth_cfg: Any = None
        self._frame_seed: Any = None
        self._n = 0

    def open(self) -> None:
        try:
            from trainer.synth import SynthConfig, frame_seed, render_frame
        except ImportError as exc:
            raise UserError(f"source.type 'synthetic': the generator (trainer.synth) is not "
                            f"installed: {exc}") from None
        c = self.config
        try:
            self._synth_cfg = SynthConfig(**{
                "width": c.width, "height": c.height, "px_size_um": self.px_size_um,
                "fraction_um": c.fraction_um, **c.generator})
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise UserError(f"source.generator.{loc}: {first['msg']}") from None
        self._render = render_frame
        self._frame_seed = frame_seed

    def close(self) -> None:
        pass

    def render(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame ``i`` (BGR uint8) and its truth: the area-equivalent diameters (um) of
        the crystals wholly inside the frame and field."""
        if self._render is None:
            self.open()
        sf = self._render(self._frame_seed(self.config.seed, i), self._synth_cfg)
        bgr = np.ascontiguousarray(sf.image[:, :, ::-1])
        truth = {"diameters_um": [float(c.diameter_um) for c in sf.crystals if c.whole],
                 "n_crystals": len(sf.crystals)}
        return bgr, truth

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        c = self.config
        period = 1.0 / c.rate_fps if c.rate_fps else 0.0
        t_next = time.monotonic()
        i = 0
        while not stop.is_set() and (c.count is None or i < c.count):
            image, truth = self.render(i)
            if period:
                yield from idle(stop, t_next - time.monotonic())
                if stop.is_set():
                    return
                t_next = max(t_next + period, time.monotonic() - period)
            yield Frame(name=f"synthetic:{i}", seq=i, image=image, t_capture=time.time(),
                        truth=truth)
            i += 1
            self._n = i

    def ack(self, frames: Iterable[Frame]) -> None:
        """Generated frames need no bookkeeping."""

    def health(self) -> dict[str, Any]:
        return {"type": self.name, "frames_generated": self._n, "seed": self.config.seed}
