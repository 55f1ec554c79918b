"""Batches: frames collected until N frames or T seconds, then one PSD report.

:class:`BatchAggregator` collects the crystals (area-equivalent diameters and
edge-correction weights) and the frame / crystal rejection counts of the open batch;
:meth:`BatchAggregator.close` computes the PSD and the process values of all its crystals
(:meth:`edge.psd.PsdAccumulator.result`) and returns a :class:`BatchReport`, a typed
result; each sink turns it into its own format (the JSON ``psd`` payload:
:mod:`edge.sinks.psd_payload`).

Batch ids come from :class:`BatchCounter`: monotonic per device, persisted atomically in
``<state dir>/batch_counter.json`` when a batch closes, so they survive restarts.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.psd import FrameContribution, ProcessValues, PsdAccumulator, PsdConfig, PSDResult
from edge.service.state import BATCH_COUNTER_FILE, atomic_write_text
from edge.service.statefiles import read_json_state
from edge.sources.base import Frame

log = logging.getLogger(__name__)

CloseReason = Literal["frames", "seconds", "command", "shutdown", "end"]


def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("crystal-psd")
    except Exception:  # not installed (source checkout)
        return ""


class BatchConfig(BaseModel):
    """``[batch]``: when a batch closes."""

    model_config = ConfigDict(extra="forbid")

    frames: int = Field(
        100, ge=1,
        description="close the batch after this many frames (used + rejected)")
    seconds: float = Field(
        0.0, ge=0,
        description="and/or after this many seconds since its first frame; 0 = no time "
                    "limit")
    on_shutdown: Literal["close", "discard"] = Field(
        "close",
        description="open batch at a stop (SIGTERM, end of input): 'close' publishes it "
                    "as a shorter batch; 'discard' drops it (a folder source then "
                    "re-reads its files on the next start)")


class BatchCounter:
    """Monotonic batch ids persisted in ``<state dir>/batch_counter.json``.

    The plant keys batches by id, so the numbering never starts again at 1 by itself. A
    counter file that cannot be used (not JSON, wrong shape, a negative id) is moved aside
    by :func:`edge.service.statefiles.read_json_state` (one ERROR line, a health incident), and
    the numbering continues after the highest batch id still known:

    1. the highest of the batch ids waiting in ``<state dir>/outbox.sqlite3`` (the newest
       batch is the last one the outbox sends) and a complete ``"last_batch_id": N``
       still legible in the moved-aside file;
    2. when neither is known, ``int(time.time())`` (seconds since 1970): ids count up by
       one per closed batch from 1, so this lies above every id handed out before unless
       batches closed faster than one a second since the last such recovery.

    Ids therefore may jump after a recovery, but never repeat. A missing file (a first
    start, or deleted by hand) starts at 1, or above the outbox's waiting batch ids.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / BATCH_COUNTER_FILE
        self._last = self._load()

    def _load(self) -> int:
        last, incident = read_json_state(
            self.path, _parse_counter, what="batch counter",
            then="batch ids continue after the highest id still known")
        if incident is None and last is None:  # no file: first start, or deleted by hand
            last = recovered_batch_id(self.path.parent, None, floor=0)
            if last:
                log.warning("%s: missing; batch ids continue above the outbox's waiting "
                            "batch %d", self.path, last)
            return last
        if incident is None:
            return last
        last = recovered_batch_id(self.path.parent, incident.moved_to)
        log.warning("%s: batch ids continue from %d", self.path, last + 1)
        return last

    @property
    def last(self) -> int:
        """The last id handed out (0: none yet)."""
        return self._last

    def next(self) -> int:
        """Allocate the next id and persist it (atomically, fsync'd) before returning."""
        new = self._last + 1
        atomic_write_text(self.path, json.dumps(
            {"last_batch_id": new, "updated": datetime.now(timezone.utc).isoformat()}) + "\n")
        self._last = new
        return new


def _parse_counter(data: Any) -> int:
    last = int(data["last_batch_id"])
    if last < 0:
        raise ValueError(f"last_batch_id must be >= 0, got {last}")
    return last


def recovered_batch_id(state_dir: Path, moved_to: str | None, *,
                       floor: int | None = None) -> int:
    """The last batch id to continue from after the counter file was lost (the rule is in
    :class:`BatchCounter`); ``moved_to`` is the moved-aside counter file, if any;
    ``floor`` replaces the time floor (0 for a counter that never existed)."""
    from edge.mqtt.outbox import OUTBOX_FILE, highest_batch_id

    known = [highest_batch_id(state_dir / OUTBOX_FILE) or 0]
    if moved_to is not None:
        try:
            text = Path(moved_to).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        known += [int(m) for m in re.findall(r'"last_batch_id"\s*:\s*(\d+)\s*[,}]', text)]
    best = max(known)
    return best if best > 0 else (int(time.time()) if floor is None else floor)


@dataclass
class BatchReport:
    """One closed batch (see the module docstring). ``frames`` holds light copies of the
    batch's frames (no images) for the source's acknowledgement."""

    batch_id: int
    device_id: str
    batch_start: datetime
    batch_end: datetime
    close_reason: str
    frames_used: int
    frames_rejected_by_reason: dict[str, int]
    crystals_measured: int
    crystals_rejected_by_reason: dict[str, int]
    psd: PSDResult
    px_size_um: float
    model: dict[str, str]
    timing: dict[str, float]
    software_version: str = ""
    frames: list[Frame] = field(default_factory=list, repr=False)
    process: ProcessValues | None = None

    @property
    def frames_rejected(self) -> int:
        return int(sum(self.frames_rejected_by_reason.values()))

    @property
    def frames_total(self) -> int:
        return self.frames_used + self.frames_rejected

    def summary(self) -> dict[str, Any]:
        """Short plain-JSON summary for logs and the health snapshot."""
        lg = self.psd.lognormal
        return {"batch_id": self.batch_id, "close_reason": self.close_reason,
                "frames_used": self.frames_used, "frames_rejected": self.frames_rejected,
                "crystals": self.crystals_measured, "x50_3_um": _f(self.psd.x50_3_um),
                "s_lnd": None if lg is None else _f(lg.s_lnd),
                "batch_end": self.batch_end.isoformat()}


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


class BatchAggregator:
    """Collects frame results of the open batch; closes it into a :class:`BatchReport`.

    Parameters
    ----------
    config : BatchConfig
        When a batch closes.
    counter : BatchCounter
        Source of batch ids (allocated at close).
    device_id : str
        Appliance id for the payload.
    px_size_um : float
        Pixel size the diameters were measured at (for the payload).
    model : dict or callable
        ``{"name", "sha256", "backend", "precision"}`` for the payload, or a callable
        returning it at close time (the backend may load with the first frame).
    psd_config : PsdConfig, optional
        Size classes, edge correction, bootstrap.
    clear_border : bool
        ``[measure] clear_border``: the edge correction applies only with it (the rule
        lives in :class:`edge.psd.PsdAccumulator`, which holds the batch's crystals).
    clock : callable, optional
        ``time.time`` replacement for tests.
    """

    def __init__(self, *, config: BatchConfig, counter: BatchCounter, device_id: str,
                 px_size_um: float, model: dict[str, str] | Callable[[], dict[str, str]],
                 psd_config: PsdConfig | None = None, clear_border: bool = True,
                 clock: Any = time.time) -> None:
        self.config = config
        self.counter = counter
        self.device_id = device_id
        self.px_size_um = float(px_size_um)
        self.model = model
        self.psd_config = psd_config or PsdConfig()
        self._acc = PsdAccumulator(self.psd_config, clear_border=clear_border)
        self._clock = clock
        self._version = software_version()
        self._reset()

    def _reset(self) -> None:
        self._acc.reset()
        self._frames: list[Frame] = []
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._opened: float | None = None  # monotonic time of the first frame
        self._timing: dict[str, float] = {"infer_ms": 0.0, "post_ms": 0.0, "latency_ms": 0.0}

    # -- collecting ---------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """Frames in the open batch (used + rejected)."""
        return self._acc.n_frames

    @property
    def started(self) -> float | None:
        """Wall-clock time of the open batch's first frame (None: empty)."""
        return self._t_first

    def _touch(self, frame: Frame) -> None:
        t = frame.t_capture
        if self._t_first is None:
            self._t_first = t
            self._opened = time.monotonic()
        self._t_first = min(self._t_first, t)
        self._t_last = t if self._t_last is None else max(self._t_last, t)
        self._frames.append(Frame(name=frame.name, seq=frame.seq, image=None,
                                  t_capture=frame.t_capture, error=frame.error,
                                  token=frame.token))

    def add_result(self, frame: Frame, contribution: FrameContribution, *,
                   timing_ms: dict[str, float] | None = None) -> None:
        """Count a used frame and its crystals into the open batch.

        ``contribution`` is the frame's kept diameters, edge-correction weights and
        rejected crystals (:meth:`edge.psd.PsdAccumulator.frame_contribution`, computed in
        a post-processing thread).
        """
        self._acc.add_contribution(contribution)
        self._touch(frame)
        for key, v in (timing_ms or {}).items():
            if key in self._timing:
                self._timing[key] += float(v)

    def add_rejection(self, frame: Frame, reason: str, *,
                      domain_score: float | None = None) -> None:
        """Count a frame the quality gate (or decoding, or an error) refused; a frame
        scored by the domain detector before its rejection passes its ``domain_score``."""
        self._touch(frame)
        self._acc.add_rejection(reason, domain_score=domain_score)

    def due(self) -> CloseReason | None:
        """Why the open batch should close now (None: not yet, or empty)."""
        if self.n_frames == 0:
            return None
        if self.n_frames >= self.config.frames:
            return "frames"
        if (self.config.seconds > 0 and self._opened is not None
                and time.monotonic() - self._opened >= self.config.seconds):
            return "seconds"
        return None

    # -- closing ------------------------------------------------------------------
    def discard(self) -> list[Frame]:
        """Drop the open batch; return its frames (not acknowledged)."""
        frames = self._frames
        self._reset()
        return frames

    def close(self, reason: str) -> BatchReport | None:
        """Close the open batch (None when it has no frames) and start a new one.

        All-or-nothing: the report is built first and the batch id allocated (and
        persisted) last, so when anything fails (``OSError`` from a full disk writing
        the counter, an error building the report) the exception propagates, the open
        batch keeps its frames and crystals, no id is used up, and a later call closes
        it with the next id.
        """
        if self.n_frames == 0:
            return None
        summary = self._acc.result()
        psd = summary.psd
        n_used = max(summary.frames_used, 1)
        timing = {
            "infer_ms_mean": self._timing["infer_ms"] / n_used,
            "post_ms_mean": self._timing["post_ms"] / n_used,
            "latency_ms_mean": self._timing["latency_ms"] / n_used,
            "duration_s": float((self._t_last or 0.0) - (self._t_first or 0.0)),
        }
        t_end = max(self._t_last or self._clock(), self._t_first or 0.0)
        report = BatchReport(
            batch_id=0,  # allocated last (see above)
            device_id=self.device_id,
            batch_start=_utc(self._t_first or t_end),
            batch_end=_utc(t_end),
            close_reason=reason,
            frames_used=summary.frames_used,
            frames_rejected_by_reason=summary.frames_rejected_by_reason,
            crystals_measured=int(summary.diameters_um.size),
            crystals_rejected_by_reason=summary.crystals_rejected_by_reason,
            psd=psd,
            px_size_um=self.px_size_um,
            model=dict(self.model() if callable(self.model) else self.model),
            timing=timing,
            software_version=self._version,
            frames=self._frames,
            process=summary.process,
        )
        report.batch_id = self.counter.next()
        log.info("batch %d closed (%s): %d frames used, %d rejected, %d crystals, %s",
                 report.batch_id, reason, report.frames_used,
                 report.frames_rejected, report.crystals_measured,
                 "no x50,3" if psd.x50_3_um is None else f"x50,3 = {psd.x50_3_um:.1f} um")
        self._reset()
        return report
