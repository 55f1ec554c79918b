"""``crystal-edge run``: when the backend is loaded (before READY where the frame size
can be known) and a slow load with the first frame (busy, not hung, up to
load_timeout_s)."""

# ruff: noqa: F811 (the fixtures imported from tests.edge.run_helpers)
from __future__ import annotations

import json
import threading
import time

from edge.service.config import load_config
from edge.service.pipeline.app import Service
from edge.service.state import read_status
from tests.edge.run_helpers import tiny_model, wait_for, workdir  # noqa: F401 (fixtures)
from tests.edge.sources.helpers import write_config, write_frames


def _backend_at_ready(workdir, monkeypatch, *, until_ready_only: bool, **kw):
    """Run the service; return (backend loaded when READY was sent, the service)."""
    from edge.service import systemd

    seen: dict[str, object] = {}
    svc = Service(load_config(workdir / "config.toml"), install_signals=False, **kw)

    def ready(status: str = "") -> None:
        seen["backend"] = svc.pipeline.processor.analyzer.backend

    monkeypatch.setattr(systemd, "notify_ready", ready)
    if not until_ready_only:
        assert svc.run() == 0
        return seen["backend"], svc
    th = threading.Thread(target=svc.run)
    th.start()
    try:
        assert svc.ready.wait(30)
    finally:
        wait_for(lambda: svc.pipeline is not None, 10, "the pipeline")
        svc.pipeline.request_stop("test")
        th.join(30)
    return seen["backend"], svc


def test_model_is_loaded_before_ready_when_the_frame_size_can_be_known(workdir, tiny_model,
                                                                        monkeypatch):
    """READY means the model is loaded: the frame size comes from the first waiting file,
    else from the last run's frames (frame_size.json); only a first start on an empty
    folder has to load the model with the first frame."""
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=2)
    state = workdir / "state"
    # first start, empty folder, nothing known: loaded lazily
    backend, _ = _backend_at_ready(workdir, monkeypatch, until_ready_only=True)
    assert backend is None and not (state / "frame_size.json").exists()
    # frames waiting: size from the oldest pending file, model loaded before READY
    write_frames(workdir / "in", ["f0.png", "f1.png"], h=240, w=320)
    backend, _ = _backend_at_ready(workdir, monkeypatch, until_ready_only=False, max_batches=1)
    assert backend is not None
    assert json.loads((state / "frame_size.json").read_text()) == {"height": 240, "width": 320}
    # restart with the folder empty again (files processed): size from frame_size.json
    backend, _ = _backend_at_ready(workdir, monkeypatch, until_ready_only=True)
    assert backend is not None
    # a damaged record is ignored, not fatal
    (state / "frame_size.json").write_text("{not json")
    backend, _ = _backend_at_ready(workdir, monkeypatch, until_ready_only=True)
    assert backend is None


def _slow_backend_run(workdir, tiny_model, monkeypatch, load_timeout_s: float):
    """A backend that takes 1.5 s to load with the first frame, stall_s 0.3 s: returns
    (pipeline.healthy() seen while loading, the status 'busy' texts, frames done)."""
    import edge.vision.backendslot

    real = edge.vision.backendslot.create_backend

    def slow(*a, **k):
        time.sleep(1.5)
        return real(*a, **k)

    monkeypatch.setattr(edge.vision.backendslot, "create_backend", slow)
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=2,
                 extra=f"stall_s = 0.3\nload_timeout_s = {load_timeout_s}\n")
    svc = Service(load_config(workdir / "config.toml"), install_signals=False)
    th = threading.Thread(target=svc.run)
    th.start()
    health, busy = [], set()
    try:
        assert svc.ready.wait(30)
        assert svc.pipeline.processor.analyzer.backend is None  # empty folder: lazy load
        write_frames(workdir / "in", ["f0.png", "f1.png"])
        t_end = time.monotonic() + 30
        while svc.pipeline.frames_total < 2 or svc.pipeline.busy() is not None:
            assert time.monotonic() < t_end, "frames not analysed"
            health.append(svc.pipeline.healthy())
            busy.add((read_status(workdir / "state") or {}).get("busy"))
            time.sleep(0.05)
        wait_for(lambda: svc.pipeline.batches_published == 1, 30, "the batch")
    finally:
        svc.pipeline.request_stop("test")
        th.join(30)
    return health, busy


def test_loading_the_backend_with_the_first_frame_is_not_a_hang(workdir, tiny_model,
                                                                 monkeypatch):
    """A TensorRT engine build in the running service takes minutes: the inference stage
    is busy, not hung, so the watchdog keeps being petted (up to [health] load_timeout_s)."""
    health, busy = _slow_backend_run(workdir, tiny_model, monkeypatch, load_timeout_s=60)
    assert len(health) > 10 and all(health)
    assert any(b and b.startswith("loading the backend") for b in busy), busy


def test_a_backend_load_past_load_timeout_counts_as_hung(workdir, tiny_model, monkeypatch):
    """Past load_timeout_s the inference stage is stuck: the service stops with status 1
    (systemd restarts it) instead of looking healthy while it does nothing."""
    import edge.vision.backendslot

    real = edge.vision.backendslot.create_backend
    monkeypatch.setattr(edge.vision.backendslot, "create_backend",
                        lambda *a, **k: (time.sleep(1.5), real(*a, **k))[1])
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=2,
                 extra="stall_s = 0.3\nload_timeout_s = 0.5\n")
    svc = Service(load_config(workdir / "config.toml"), install_signals=False)
    rc: list[int] = []
    th = threading.Thread(target=lambda: rc.append(svc.run()))
    th.start()
    assert svc.ready.wait(30)
    write_frames(workdir / "in", ["f0.png", "f1.png"])
    th.join(30)
    assert not th.is_alive() and rc == [1]
    assert "stage inference stalled" in svc.pipeline.failed
