"""``crystal-edge run``: reloading the configuration (SIGHUP, MQTT reload_config) in the
running process; an invalid or unstartable file leaves the service on the previous one."""

# ruff: noqa: F811 (the fixtures imported from tests.edge.run_helpers)
from __future__ import annotations

import signal

from edge.service.state import read_status
from edge.sinks.jsonl import read_jsonl
from tests.edge.run_helpers import (  # noqa: F401 (fixtures)
    NotifyReceiver,
    service_process,
    sigterm,
    tiny_model,
    wait_for,
    workdir,
)
from tests.edge.sources.helpers import running_service, write_config, write_frames


def test_reload_applies_a_valid_file_and_refuses_an_invalid_one(workdir, tiny_model,
                                                                 monkeypatch, caplog):
    """SIGHUP / MQTT reload_config: the open batch is closed, the pipeline is rebuilt from
    the re-read file in the same process (batch ids continue); an invalid file is refused
    and the service runs on. systemd hears RELOADING then READY."""
    rx = NotifyReceiver(workdir / "notify.sock", monkeypatch)
    cfg_path = workdir / "config.toml"
    write_config(cfg_path, model=tiny_model, batch_frames=2)
    write_frames(workdir / "in", [f"a{i}.png" for i in range(4)])
    try:
        with running_service(cfg_path) as svc:
            wait_for(lambda: svc.pipeline.batches_published >= 2, 30, "2 batches of 2")
            first = svc.pipeline
            good = cfg_path.read_text()
            cfg_path.write_text(good.replace("frames = 2\n", "frames = -5\n"))
            with caplog.at_level("ERROR", logger="edge.service.pipeline.app"):
                assert svc.request_reload("test") is False
            assert any("refused, running on unchanged" in r.getMessage() and "frames" in
                       r.getMessage() for r in caplog.records)
            assert svc.pipeline is first and first.stop_reason is None
            cfg_path.write_text(good.replace("frames = 2\n", "frames = 3\n"))
            assert svc.request_reload("test") is True
            wait_for(lambda: svc.reloads == 1 and svc.ready.is_set() and svc.pipeline is not None
                  and svc.pipeline is not first, 30, "the reload")
            assert svc.cfg.batch.frames == 3
            write_frames(workdir / "in", [f"b{i}.png" for i in range(3)])
            wait_for(lambda: svc.pipeline.batches_published >= 1, 30, "a batch of 3")
    finally:
        rx.close()
    recs = read_jsonl(workdir / "out.jsonl")
    assert [r["batch_id"] for r in recs] == list(range(1, len(recs) + 1))
    assert [r["payload"]["frames"]["used"] for r in recs][:2] == [2, 2]
    assert recs[-1]["payload"]["frames"]["used"] == 3
    msgs = rx.msgs
    kinds = [m.split("\n")[0].split("=")[0] for m in msgs]
    i = kinds.index("RELOADING")
    assert "READY" in kinds[i + 1:] and "STOPPING" not in kinds[:i], kinds
    assert "MONOTONIC_USEC=" in msgs[i]


def test_sighup_reloads_the_running_process(workdir, tiny_model):
    """``systemctl reload`` sends SIGHUP: the open batch is closed and published, the new
    batch size applies, the process (PID) stays."""
    cfg_path = workdir / "config.toml"
    write_config(cfg_path, model=tiny_model, batch_frames=100)
    write_frames(workdir / "in", [f"f{i}.png" for i in range(3)])
    proc = service_process(workdir)
    try:
        wait_for(lambda: (read_status(workdir / "state") or {}).get("frames_total") == 3,
              90, "3 frames in status.json")
        cfg_path.write_text(cfg_path.read_text().replace("frames = 100\n", "frames = 2\n"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (workdir / "out.jsonl").exists() and len(read_jsonl(
            workdir / "out.jsonl")) == 1, 60, "the open batch closed by the reload")
        write_frames(workdir / "in", [f"g{i}.png" for i in range(2)])
        wait_for(lambda: len(read_jsonl(workdir / "out.jsonl")) == 2, 60, "a batch of 2")
        assert proc.poll() is None
        err = sigterm(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = read_jsonl(workdir / "out.jsonl")
    assert [(r["batch_id"], r["payload"]["frames"]["used"]) for r in recs] == [(1, 3), (2, 2)]
    assert "reload (SIGHUP)" in err and "Traceback" not in err


def test_reload_to_a_file_that_cannot_start_goes_back_to_the_previous_one(
        workdir, tiny_model, caplog):
    cfg_path = workdir / "config.toml"
    write_config(cfg_path, model=tiny_model, batch_frames=2)
    with running_service(cfg_path) as svc:
        first = svc.pipeline
        # valid TOML and schema, but the model file does not exist
        write_config(cfg_path, model=workdir / "gone.onnx", batch_frames=3)
        with caplog.at_level("ERROR", logger="edge.service.pipeline.app"):
            assert svc.request_reload("test") is True
            wait_for(lambda: svc.pipeline is not None and svc.pipeline is not first
                  and svc.ready.is_set(), 30, "the service back on its previous config")
        assert any("cannot start, going back" in r.getMessage() and "gone.onnx" in
                   r.getMessage() for r in caplog.records)
        assert svc.cfg.batch.frames == 2
        write_frames(workdir / "in", ["f0.png", "f1.png"])
        wait_for(lambda: svc.pipeline.batches_published == 1, 30, "a batch with the old config")
    assert [r["payload"]["frames"]["used"] for r in read_jsonl(workdir / "out.jsonl")] == [2]
