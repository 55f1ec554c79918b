"""Assemble the running service from an :class:`~edge.service.config.EdgeConfig`
(``crystal-edge run``).

Order of start-up, so that a mistake is reported before anything is half started:
state directory and batch counter -> model + metadata (+ backend when the input size is
known) -> source -> sinks (JSON lines, MQTT) -> pipeline threads -> systemd ``READY``.
Shutdown (SIGTERM/SIGINT or ``--max-frames``/``--max-batches``): systemd ``STOPPING``,
the pipeline drains and closes the open batch, sinks are closed (MQTT sends its backlog
for a few seconds; what is left stays in the outbox), then the source and the model.
Reload (SIGHUP, ``systemctl reload``, or the MQTT ``reload_config`` command): the
configuration file is read and validated again; if it is invalid the service says why in
one log line and runs on unchanged. If it is valid, systemd hears ``RELOADING``, the
pipeline drains and closes the open batch (published as usual), everything is closed and
built again from the new file in the same process (batch ids continue), then ``READY``.
If the new file is valid but cannot start (a model file that is not there, say), the
service says so and starts again with the configuration it had.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.service import systemd
from edge.service.config import EdgeConfig
from edge.service.pipeline.batch import BatchAggregator, BatchCounter, software_version
from edge.service.pipeline.runtime import Pipeline, PipelineOptions
from edge.service.snapshot import StatusSnapshot
from edge.service.state import (
    ensure_state_dir,
    read_frame_size,
    resolve_state_dir,
    write_frame_size,
)
from edge.sinks import build_sinks, required_sinks
from edge.sources import build_source

log = logging.getLogger(__name__)


class Service:
    """The appliance built from a configuration; :meth:`run` blocks until it stops.

    Parameters
    ----------
    cfg : EdgeConfig
        Validated configuration (paths already absolute).
    max_frames, max_batches : int, optional
        Stop after this many frames / closed batches (tests, demos, soak runs).
    install_signals : bool
        Handle SIGTERM/SIGINT/SIGHUP (only possible in the main thread).
    config_path : path, optional
        The file ``cfg`` came from: needed to reload (SIGHUP, MQTT ``reload_config``).
    """

    def __init__(self, cfg: EdgeConfig, *, max_frames: int | None = None,
                 max_batches: int | None = None, install_signals: bool = True,
                 config_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path is not None else None
        self.reloads = 0
        self._next_cfg: EdgeConfig | None = None
        self._terminating = False
        self.stopping_since: float | None = None  # monotonic time of SIGTERM/SIGINT
        self._reload_lock = threading.Lock()
        self._last_reload_at = -math.inf  # monotonic time of the last reload started
        self.max_frames = max_frames
        self.max_batches = max_batches
        self.install_signals = install_signals
        self.pipeline: Pipeline | None = None
        self.metrics: Any = None
        self.web: Any = None
        self.ready = threading.Event()
        self._cleanup: list[tuple[str, Callable[[], Any]]] = []

    # ------------------------------------------------------------------ assembly
    def _build(self) -> Pipeline:
        from edge.modelmeta import check_model_file
        from edge.service.pipeline.analysis import AnalyzerProcessor
        from edge.vision.analyzer import FrameAnalyzer

        cfg = self.cfg
        device_id = cfg.device_id()
        if not cfg.sinks.mqtt.device_id:
            cfg.sinks.mqtt.device_id = device_id
        if cfg.web.enabled and cfg.sinks.history.enabled is None:
            cfg.sinks.history.enabled = True  # the page's trends read the batch history
        state_dir = ensure_state_dir(resolve_state_dir(cfg.state.dir))
        self.state_dir = state_dir
        counter = BatchCounter(state_dir)
        log.info("state directory %s; last batch id %d", state_dir, counter.last)

        check_model_file(Path(cfg.model.path))  # before the source: the more basic mistake
        source = build_source(cfg.source, state_dir=state_dir,
                              px_size_um=cfg.optics.px_size_um, decode=cfg.decode)
        source.open()
        self._cleanup.append(("source", source.close))

        frame_hw = known_frame_size(cfg, source, state_dir)
        analyzer = FrameAnalyzer(
            cfg.model.path, backend_config=cfg.backend, measure_config=cfg.measure,
            quality_config=cfg.quality, roi_config=cfg.roi, domain_config=cfg.domain,
            px_size_um=cfg.optics.px_size_um,
            inference_scale=cfg.model.inference_scale, flip_average=cfg.model.flip_average,
            thin_width_px=cfg.model.thin_width_px,
            thin_scale_factor=cfg.model.thin_scale_factor,
            frame_hw=frame_hw, state_dir=state_dir,
            lock_frame_size=True,
            on_frame_size=lambda hw: write_frame_size(state_dir, hw))
        self._cleanup.append(("model", analyzer.close))
        if analyzer.backend is None:
            log.info("the backend is loaded with the first frame (its size is not known yet: "
                     "no frame waiting and none analysed before; set [backend] "
                     "input_height/input_width to load it at start-up)")
        processor = AnalyzerProcessor(analyzer, psd_config=cfg.psd)

        def model_ident() -> dict[str, str]:
            mi = analyzer.model_info
            return {"name": str(mi.get("name") or ""), "sha256": str(mi.get("sha256") or ""),
                    "backend": str(mi.get("backend") or "pending"),
                    "precision": str(mi.get("precision") or "")}

        sinks = build_sinks(cfg.sinks, state_dir=state_dir, ident=model_ident(),
                            on_command=self._on_command, identity=model_ident)
        for s in sinks:
            s.open()
            self._cleanup.append((f"sink {s.name}", s.close))

        aggregator = BatchAggregator(
            config=cfg.batch, counter=counter, device_id=device_id,
            px_size_um=cfg.optics.px_size_um, model=model_ident, psd_config=cfg.psd,
            clear_border=cfg.measure.clear_border)

        def info() -> dict[str, Any]:
            mi = analyzer.model_info
            return {"software_version": software_version(),
                    "backend": mi.get("backend_info") or {"name": mi.get("backend")},
                    "model": {k: mi.get(k) for k in ("name", "file", "sha256",
                                                     "measure_px_size_um", "flip_average")},
                    "state_dir": str(state_dir)}

        return Pipeline(source=source, processor=processor, aggregator=aggregator,
                        sinks=sinks, options=self._options(), state_dir=state_dir,
                        device_id=device_id,
                        info=info, watchdog=systemd.notify_watchdog,
                        watchdog_interval_s=systemd.watchdog_interval_s(),
                        on_health=self._on_health, required_sinks=required_sinks(cfg.sinks))

    def _start_metrics(self, pipeline: Pipeline) -> None:
        """The metrics endpoint, if it can listen: it is telemetry, so a port another
        process holds costs the endpoint (one ERROR, ``last_error`` in status), never the
        measurements."""
        from edge.service.metrics import MetricsServer

        cfg = self.cfg.metrics
        self.metrics = MetricsServer(pipeline.latest_snapshot, config=cfg)
        try:
            port = self.metrics.start()
        except OSError as exc:
            self.metrics = None
            text = (f"metrics.port {cfg.port}: cannot listen on {cfg.host}: "
                    f"{exc.strerror or exc}; running without the metrics endpoint")
            log.error("%s", text)
            pipeline.health.error("metrics", text)
            return
        log.info("metrics on http://%s:%d/metrics", cfg.host, port)

    def _options(self) -> PipelineOptions:
        cfg = self.cfg
        return PipelineOptions(
            queue_size=cfg.pipeline.queue_size, infer_batch=cfg.backend.max_batch,
            post_workers=cfg.pipeline.post_workers, health_interval_s=cfg.health.interval_s,
            stall_s=cfg.health.stall_s, load_timeout_s=cfg.health.load_timeout_s,
            max_frames=self.max_frames, max_batches=self.max_batches)

    # ------------------------------------------------------------------ callbacks
    def _on_command(self, cmd: Any) -> None:
        name = getattr(cmd, "command", cmd)
        rid = getattr(cmd, "request_id", "") or ""
        if name == "close_batch" and self.pipeline is not None:
            self.pipeline.request_close_batch(f"mqtt command {rid}")
        elif name == "reload_config":  # from anyone on the broker: rate-limited
            self.request_reload(f"mqtt command {rid}".strip(),
                                min_interval_s=self.cfg.sinks.mqtt.reload_min_interval_s)
        else:
            log.warning("command %r is not supported by this version; ignored", name)

    @staticmethod
    def _on_health(snap: StatusSnapshot) -> None:
        last = "-" if snap.last_batch_id is None else snap.last_batch_id
        systemd.notify_status(
            f"{snap.state}: {snap.frames_per_s or 0:.2f} frames/s, "
            f"{snap.frames_total} frames, last batch {last}")

    def request_reload(self, reason: str = "reload", *, min_interval_s: float = 0.0) -> bool:
        """Re-read the configuration file; restart the pipeline with it if it is valid.

        Returns True when a reload was started. An invalid file is refused with one log
        line and the service runs on with the configuration it has. A request less than
        ``min_interval_s`` after the last reload started is refused with one log line
        (MQTT ``reload_config``: ``mqtt.reload_min_interval_s``; SIGHUP: no limit).
        """
        from edge.service.config import load_config

        if self.config_path is None:
            log.warning("reload (%s) ignored: the service was not started from a file", reason)
            return False
        since = time.monotonic() - self._last_reload_at
        if since < min_interval_s:
            log.warning("reload (%s) refused: the last reload started %.1f s ago (at most one "
                        "per %g s, sinks.mqtt.reload_min_interval_s)", reason, since,
                        min_interval_s)
            return False
        try:
            new = load_config(self.config_path)
        except UserError as exc:
            log.error("reload (%s) refused, running on unchanged: %s", reason, exc)
            return False
        with self._reload_lock:
            pipeline = self.pipeline
            if pipeline is None or self._terminating or pipeline.stop_reason is not None:
                log.warning("reload (%s) ignored: the service is starting or stopping", reason)
                return False
            self._next_cfg = new
            self._last_reload_at = time.monotonic()
        systemd.notify_reloading(f"reloading ({reason})")
        log.info("reload (%s): %s is valid; closing the open batch and restarting the "
                 "pipeline", reason, self.config_path)
        pipeline.request_stop(f"reload: {reason}")
        return True

    def _signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGHUP":
            threading.Thread(target=self.request_reload, args=("SIGHUP",), daemon=True,
                             name="reload").start()  # file I/O: not in the handler
            return
        with self._reload_lock:
            self._terminating = True
            self._next_cfg = None
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        if self.pipeline is None:
            raise KeyboardInterrupt
        if self.pipeline.stop_reason is not None and name == "SIGINT":
            log.warning("second SIGINT: aborting without draining")
            self.pipeline.abort()
            return
        systemd.notify_stopping(f"{name}: finishing the open batch")
        self.pipeline.request_stop(name)

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        old: dict[int, Any] = {}
        try:
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    old[sig] = signal.signal(sig, self._signal)
            previous: EdgeConfig | None = None  # the config before a reload, until it runs
            while True:
                try:
                    rc = self._run_once()
                except UserError as exc:
                    if previous is None or self._terminating:
                        raise
                    # valid TOML, but it cannot start (model file gone, folder missing...)
                    log.error("reloaded configuration cannot start, going back to the previous "
                              "one: %s", exc)
                    self.cfg, previous = previous, None
                    continue
                previous = None
                with self._reload_lock:
                    nxt, self._next_cfg = self._next_cfg, None
                    if nxt is None or self._terminating:
                        return rc
                    previous, self.cfg = self.cfg, nxt
                    self.pipeline = None
                    self.ready.clear()
                self.reloads += 1
                log.info("configuration reloaded from %s (reload %d)", self.config_path,
                         self.reloads)
        finally:
            self.ready.set()
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _run_once(self) -> int:
        self._cleanup = []
        self.metrics = None
        try:
            pipeline = self._build()
            with self._reload_lock:
                self.pipeline = pipeline
            if self.cfg.metrics.enabled:
                self._start_metrics(pipeline)
            if self.cfg.web.enabled:
                from edge.web.service import start_web

                self.web = start_web(self.cfg, pipeline, self.state_dir)
            pipeline.start()
            systemd.notify_ready(f"running: source {self.cfg.source.type}")
            self.ready.set()
            rc = pipeline.run()
            reloading = self._next_cfg is not None and not self._terminating
            if not reloading:
                systemd.notify_stopping(f"stopped ({pipeline.stop_reason or 'end of input'})")
            log.info("stopped (%s): %d frames, %d batches closed, %d published",
                     pipeline.stop_reason or "end of input", pipeline.frames_total,
                     pipeline.batches_closed, pipeline.batches_published)
            return rc
        finally:
            if self.metrics is not None:
                self.metrics.stop()
            if self.web is not None:
                self.web.stop()
                self.web = None
            for what, fn in reversed(self._cleanup):
                try:
                    fn()
                except Exception:
                    log.exception("closing %s failed", what)


def known_frame_size(cfg: EdgeConfig, source: Any, state_dir: Path) -> tuple[int, int] | None:
    """The frame size the backend can be loaded for before READY, or None.

    From the source's configuration (camera, generator), the oldest pending file of a
    watched folder (its header), or the last run's ``frame_size.json`` (unless no frame
    of that size could be decoded under the ``[decode]`` limits now).
    """
    frame_hw, hw_from = None, ""
    src_cfg = cfg.source
    if src_cfg.type == "synthetic":
        frame_hw, hw_from = (src_cfg.height, src_cfg.width), "[source]"
    elif src_cfg.type == "opencv" and src_cfg.width and src_cfg.height:
        frame_hw, hw_from = (src_cfg.height, src_cfg.width), "[source]"
    elif hasattr(source, "frame_size_hint"):
        frame_hw, hw_from = source.frame_size_hint(), "the first pending frame"
    if frame_hw is None:
        frame_hw, hw_from = read_frame_size(state_dir), "the last run's frames"
        if frame_hw is not None and frame_hw[0] * frame_hw[1] > cfg.decode.max_frame_pixels:
            frame_hw = None
    if frame_hw is not None:
        log.info("frame size %dx%d (from %s): loading the model before READY",
                 frame_hw[1], frame_hw[0], hw_from)
    return frame_hw
