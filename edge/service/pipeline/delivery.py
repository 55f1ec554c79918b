"""Handing closed batches to the sinks: required sinks, retries with back-off, faults.

A batch is acknowledged to the source only when every *required* sink accepted it
(JSON lines: written; MQTT: committed to its outbox). A required sink that fails is
tried again, alone (the sinks that already have the batch do not get it twice), with a
growing back-off (1 s doubling to 30 s); meanwhile the batch's frames stay
unacknowledged and :meth:`Delivery.problems` names the sink and its error for the
health snapshot. A sink that is not required gets one try per batch: its failure is
logged once and does not hold the batch back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timezone
from typing import Any

from edge.service.pipeline.stages import Stage, one_line
from edge.sinks.base import Publishable, Sink

log = logging.getLogger(__name__)


class Backoff:
    """Delays between retries: ``first`` doubling up to ``cap`` seconds."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        """The delay before the next try (and grow the one after it)."""
        d = self.delay
        self.delay = min(self.delay * 2.0, self.cap)
        return d

    def reset(self) -> None:
        self.delay = self.first


def sink_name(sink: Sink) -> str:
    return str(getattr(sink, "name", "?"))


class Delivery:
    """Publish reports to ``sinks`` (see the module docstring).

    Parameters
    ----------
    sinks : sequence of Sink
        Opened sinks, in publishing order.
    required : collection of str, optional
        Names of the sinks a batch must reach before it is acknowledged; None = all.
    on_error : callable
        ``on_error(where, exc)`` records a failure as the pipeline's last error.
    backoff : tuple of float
        First delay and cap of the retry back-off (seconds).
    """

    def __init__(self, sinks: Sequence[Sink], *, required: Collection[str] | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None,
                 backoff: tuple[float, float] = (1.0, 30.0)) -> None:
        self.sinks = list(sinks)
        names = [sink_name(s) for s in self.sinks]
        self.required = set(names) if required is None else set(required) & set(names)
        self._on_error = on_error
        self._backoff = backoff
        self._faults: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def deliver(self, report: Publishable, stage: Stage, give_up: threading.Event) -> bool:
        """Publish ``report`` until every required sink has it (True), or ``give_up`` is
        set while one still fails (False, after a last try)."""
        pending = list(self.sinks)
        backoff = Backoff(*self._backoff)
        while True:
            pending = self._attempt(report, pending, stage)
            if not pending:
                return True
            if give_up.is_set():
                return False
            stage.set("retrying")
            give_up.wait(backoff.next())

    def _attempt(self, report: Publishable, sinks: list[Sink], stage: Stage) -> list[Sink]:
        """One try per sink; returns the required sinks that still lack the report."""
        still: list[Sink] = []
        for sink in sinks:
            name = sink_name(sink)
            stage.set("working")
            try:
                sink.publish(report)
            except Exception as exc:
                text = stage.failed(f"sink {name} batch {report.batch_id}", exc)
                if self._on_error is not None:
                    self._on_error(f"sink {name}", exc)
                if name in self.required:
                    self._fault(name, report.batch_id, exc)
                    still.append(sink)
                else:
                    log.warning("pipeline: %s (sink not required: the batch is acknowledged "
                                "without it)", text)
                continue
            self._recovered(name, report.batch_id)
        return still

    def _fault(self, name: str, batch_id: int, exc: BaseException) -> None:
        with self._lock:
            f = self._faults.get(name)
            if f is None:
                f = self._faults[name] = {
                    "since": datetime.now(timezone.utc).isoformat(),
                    "since_mono": time.monotonic(), "attempts": 0}
                log.error("pipeline: required sink %s failed on batch %d: %s; the batch "
                          "stays unacknowledged and is retried (back-off up to %.0f s)",
                          name, batch_id, one_line(exc), self._backoff[1])
            else:
                log.debug("pipeline: sink %s still failing on batch %d: %s", name,
                          batch_id, one_line(exc))
            f.update(error=one_line(exc), batch_id=batch_id, attempts=f["attempts"] + 1)

    def _recovered(self, name: str, batch_id: int) -> None:
        with self._lock:
            f = self._faults.pop(name, None)
        if f is not None:
            log.info("pipeline: sink %s took batch %d after %d failed attempt(s) over "
                     "%.1f s", name, batch_id, f["attempts"],
                     time.monotonic() - f["since_mono"])

    def faults(self) -> dict[str, dict[str, Any]]:
        """Required sinks failing now: ``{name: {since, error, batch_id, attempts}}``."""
        with self._lock:
            return {n: {k: v for k, v in f.items() if k != "since_mono"}
                    for n, f in self._faults.items()}

    def problems(self) -> list[str]:
        """One line per failing required sink (for the health snapshot)."""
        return [f"required sink {n} failing since {f['since']} (batch {f['batch_id']} "
                f"waiting, {f['attempts']} attempt(s)): {f['error']}"
                for n, f in self.faults().items()]


class Closer:
    """Closes the open batch, keeping it and retrying with back-off when closing fails.

    A failed close (``OSError`` from a full disk writing the batch counter, any error
    building the report) leaves the batch open with its frames and crystals
    (:meth:`edge.service.pipeline.batch.BatchAggregator.close` is all-or-nothing); it is tried again
    after 1 s, doubling up to 30 s, and closes with the next id once it can.
    """

    def __init__(self, aggregator: Any, *, backoff: tuple[float, float] = (1.0, 30.0)) -> None:
        self.agg = aggregator
        self._backoff = Backoff(*backoff)
        self._retry_at = 0.0
        self.fault: dict[str, Any] | None = None
        self._since_mono = 0.0

    @property
    def failing(self) -> bool:
        return self.fault is not None

    def close(self, reason: str, *, force: bool = False) -> tuple[bool, Any]:
        """Try to close now: ``(done, report)``; ``done`` is False when the close failed
        or its back-off has not run out (``force`` tries regardless)."""
        now = time.monotonic()
        if not force and now < self._retry_at:
            return False, None
        try:
            report = self.agg.close(reason)
        except Exception as exc:
            self._failed(exc, now)
            return False, None
        if self.fault is not None:
            log.info("pipeline: batch close works again after %d failed attempt(s) over "
                     "%.1f s", self.fault["attempts"], now - self._since_mono)
        self.fault = None
        self._backoff.reset()
        self._retry_at = 0.0
        return True, report

    def _failed(self, exc: BaseException, now: float) -> None:
        delay = self._backoff.next()
        self._retry_at = now + delay
        if self.fault is None:
            self._since_mono = now
            self.fault = {"since": datetime.now(timezone.utc).isoformat(), "attempts": 0}
            log.error("pipeline: closing the batch of %d frame(s) failed: %s; it stays "
                      "open and is retried (back-off up to %.0f s)", self.agg.n_frames,
                      one_line(exc), self._backoff.cap)
        else:
            log.debug("pipeline: batch close still failing: %s", one_line(exc))
        self.fault.update(error=one_line(exc), attempts=self.fault["attempts"] + 1,
                          frames=self.agg.n_frames, retry_in_s=round(delay, 1))

    def wait_s(self) -> float:
        """Seconds until the next try is due (0: now)."""
        return max(0.0, self._retry_at - time.monotonic())

    def problems(self) -> list[str]:
        f = self.fault
        if f is None:
            return []
        return [f"batch close failing since {f['since']} ({f['frames']} frame(s) kept, "
                f"{f['attempts']} attempt(s)): {f['error']}"]
