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

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import UserError
from edge.sources.base import Frame, wait


class SyntheticSourceConfig(BaseModel):
    """``[source]`` with ``type = "synthetic"``: generated back-lit flow-cell frames."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["synthetic"] = Field("synthetic", description="source type")
    seed: int = Field(0, description="random seed (frame i uses seed + i)")
    width: int = Field(1024, ge=64, le=8192, description="frame width in pixels")
    height: int = Field(768, ge=64, le=8192, description="frame height in pixels")
    count: int | None = Field(None, ge=1, description="frames to generate; None = endless")
    rate_fps: float | None = Field(
        None, gt=0, description="frames per second; None = as fast as they are taken")
    fraction: str = Field(
        "fine", description="crystal population preset of the generator (e.g. the sieve "
                            "fraction); see `crystal-train synth --help`")


class SyntheticSource:
    """Generated frames (see the module docstring)."""

    name = "synthetic"

    def __init__(self, config: SyntheticSourceConfig, *,
                 state_dir: str | Path | None = None) -> None:
        self.config = config
        self._render: Any = None
        self._n = 0

    def open(self) -> None:
        try:
            from trainer.synth import render_frame
        except ImportError as exc:
            raise UserError(f"source.type 'synthetic': the generator (trainer.synth) is not "
                            f"installed: {exc}") from None
        self._render = render_frame

    def close(self) -> None:
        pass

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if self._render is None:
            self.open()
        c = self.config
        period = 1.0 / c.rate_fps if c.rate_fps else 0.0
        t_next = time.monotonic()
        i = 0
        while not stop.is_set() and (c.count is None or i < c.count):
            image, truth = self._render(seed=c.seed + i, width=c.width, height=c.height,
                                        fraction=c.fraction)
            if period:
                if wait(stop, t_next - time.monotonic()):
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
