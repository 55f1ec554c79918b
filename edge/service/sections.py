"""The sections of the configuration file that belong to the service itself.

``[device]``, ``[model]``, ``[optics]``, ``[health]`` and ``[pipeline]``: the sections no
other module owns. :class:`edge.service.config.EdgeConfig` puts them together with the
sections of the other modules.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.vision.finescale import THIN_SCALE_FACTOR, THIN_WIDTH_PX


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceConfig(_Section):
    """``[device]``: who this appliance is."""

    id: str = Field(
        "", max_length=64,
        description="appliance id in payloads and MQTT topics; empty = the host name")
    description: str = Field("", description="free text, e.g. the crystallizer's tag")


class ModelSection(_Section):
    """``[model]``: the segmentation model."""

    path: Path = Field(
        Path("models/crystal-seg.onnx"),
        description="ONNX model; its metadata JSON (classes, pixel size, sha256) must lie "
                    "beside it, and the ONNX must match the sha256 recorded there")
    inference_scale: float | Literal["auto"] = Field(
        "auto",
        description="resize factor of the frames before inference; 'auto' = so that the "
                    "network sees the pixel size it was trained at, but frames are never "
                    "shrunk further than the model's training frames were (0.5 for the "
                    "bundled model). Crystals are measured at inference "
                    "resolution with the pixel size scaled accordingly")
    flip_average: bool = Field(
        False,
        description="also segment every frame mirrored left-right and average the two "
                    "outputs: crystal boundaries a little more exact (crystal IoU +0.007 on "
                    "twins, +0.017 on needles) for a second inference per frame")
    thin_width_px: float = Field(
        THIN_WIDTH_PX, ge=0, le=100,
        description="with inference_scale 'auto': a frame whose crystals are narrower than "
                    "this at the network (area-weighted median width, network pixels) is "
                    "segmented again at thin_scale_factor times the scale, for outlines "
                    "finer than the crystals are wide (needles); 0 = never")
    thin_scale_factor: float = Field(
        THIN_SCALE_FACTOR, ge=1.0, le=4.0,
        description="scale of that second pass over the first; the pass never enlarges a "
                    "frame beyond its own resolution or further than 'auto' did")


class OpticsConfig(_Section):
    """``[optics]``: the microscope's geometry."""

    px_size_um: float = Field(
        1.45, gt=0, le=1000,
        description="size of one frame pixel in micrometres (calibrate with a stage "
                    "micrometer; the study's set-up: about 1.45 um)")
    calibrated_at: datetime | None = Field(
        None, description="when px_size_um was measured (UTC; written by crystal-edge "
                          "calibrate --write-config)")
    calibration: str | None = Field(
        None, description="how px_size_um was measured: method, reference and uncertainty "
                          "(written by crystal-edge calibrate --write-config)")


class HealthConfig(_Section):
    """``[health]``: the periodic health snapshot."""

    interval_s: float = Field(
        5.0, gt=0, le=3600,
        description="seconds between health snapshots (status.json in the state "
                    "directory, and every sink's health message)")
    stall_s: float = Field(
        120.0, gt=0,
        description="a pipeline stage that makes no progress for this long counts as hung:"
                    " the systemd watchdog is no longer petted (systemd restarts the "
                    "service after WatchdogSec)")
    load_timeout_s: float = Field(
        3600.0, gt=0,
        description="while the inference stage loads the backend (a TensorRT engine build "
                    "takes minutes on a Jetson) it may exceed stall_s up to this long")


class PipelineConfig(_Section):
    """``[pipeline]``: threads and queues."""

    queue_size: int = Field(
        4, ge=1, le=256,
        description="frames that may wait between two stages (back-pressure beyond)")
    post_workers: int = Field(
        1, ge=1, le=16, description="post-processing threads (measuring is CPU work)")
