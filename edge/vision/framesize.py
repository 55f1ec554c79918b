"""The frame-size lock of a run: one frame size for the rest of it (the service's).

With the lock (:class:`~edge.vision.analyzer.FrameAnalyzer` ``lock_frame_size``), the
first frame that passes the quality gate fixes the frame size for the rest of the run
(``[backend]`` input_height/input_width fix the network input from the start). A frame of
another size is rejected as ``bad_shape`` with both sizes in the detail, instead of
loading the backend again (a TensorRT engine build takes many minutes). Without it
(``analyze``) frames of any size pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class FrameSizeLock:
    """The frame size (and network input) a run is held to.

    Parameters
    ----------
    enabled : bool
        False: every size passes and nothing is locked.
    input_hw_for : callable
        Padded network input (H, W) for frames of a given (H, W)
        (:meth:`edge.vision.analyzer.FrameAnalyzer.input_hw_for`).

    Attributes
    ----------
    frame_hw : (H, W) or None
        The locked frame size; None until the first accepted frame.
    """

    def __init__(self, enabled: bool,
                 input_hw_for: Callable[[tuple[int, int]], tuple[int, int]]) -> None:
        self.enabled = enabled
        self.frame_hw: tuple[int, int] | None = None
        self._input_hw: tuple[int, int] | None = None
        self._input_hw_for = input_hw_for

    def fix_input(self, input_hw: tuple[int, int]) -> None:
        """Hold frames to the network input ``input_hw`` from the start (``[backend]``
        input_height/input_width); frames that pad to another input are refused."""
        self._input_hw = input_hw if self.enabled else None

    def lock(self, hw: tuple[int, int]) -> None:
        """Lock at the frame size ``hw`` unless disabled or locked already."""
        if not self.enabled or self.frame_hw is not None:
            return
        self.frame_hw = hw
        self._input_hw = self._input_hw or self._input_hw_for(hw)
        log.info("frame size locked at %dx%d px for this run", hw[1], hw[0])

    def mismatch(self, hw: tuple[int, int]) -> str:
        """Why a frame of ``hw`` differs from the locked size ("" when it does not)."""
        if not self.enabled:
            return ""
        if self.frame_hw is not None:
            if hw == self.frame_hw:
                return ""
            lh, lw = self.frame_hw
            return (f"frame {hw[1]}x{hw[0]} px differs from the frame size {lw}x{lh} px the "
                    f"model runs at (restart the service after changing the camera's "
                    f"resolution)")
        if self._input_hw is None or self._input_hw_for(hw) == self._input_hw:
            return ""
        ih, iw = self._input_hw
        return (f"frame {hw[1]}x{hw[0]} px does not fit the network input {iw}x{ih} set by "
                f"[backend] input_height/input_width")
