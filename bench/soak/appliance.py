"""The appliance under test: a work directory with a small tmpfs state directory, its
configuration, and ``crystal-edge run`` supervised the way systemd supervises it.

The unit (``systemd/crystal-edge.service``) restarts on failure, never after exit status
2 (``RestartPreventExitStatus=2``), gives up after 5 starts in 600 s and kills the
service 30 s after SIGTERM. :class:`Supervisor` restarts after *every* exit so that the
soak goes on, and notes each exit that would have left a real appliance down.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICE_ID = "soak-01"
TOPIC_PREFIX = "soak"
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL_S = 600.0
TIMEOUT_STOP_S = 30.0


def mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of ``size_mb`` MB on ``path``; None when mounted, else the reason."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                            str(path)], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount failed: {exc}"
    return None if r.returncode == 0 else f"mount failed: {r.stderr.strip() or r.returncode}"


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily when something still holds it open)."""
    r = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def config_text(*, model: Path, broker_port: int, threads: int = 1) -> str:
    """The run configuration: folder ``in`` (delivered files moved to ``done``, unreadable
    ones to ``failed``), state in ``state``, JSON lines in ``out.jsonl``, MQTT with
    commands, batches of 5 frames or 10 s."""
    return f"""\
[device]
id = "{DEVICE_ID}"

[source]
type = "folder"
path = "in"
poll_s = 0.2
stable_polls = 1
truncated_grace_s = 3.0
after = "move"
move_to = "done"
failed_to = "failed"

[model]
path = "{model}"

[backend]
name = "onnxruntime"
onnxruntime_device = "cpu"
threads = {threads}
warmup_runs = 0

[batch]
frames = 5
seconds = 10.0

[state]
dir = "state"

[sinks.jsonl]
path = "out.jsonl"
max_bytes = 0

[psd]
bootstrap_n = 50

[health]
interval_s = 1.0

[sinks.mqtt]
enabled = true
host = "127.0.0.1"
port = {broker_port}
topic_prefix = "{TOPIC_PREFIX}"
commands_enabled = true
reconnect_min_s = 0.5
reconnect_max_s = 5.0
health_interval_s = 5.0
"""


@dataclass
class Exit:
    """One end of the service process (``code`` < 0: killed by that signal)."""

    t: float
    code: int
    uptime_s: float
    by_supervisor: str = ""


@dataclass
class Supervisor:
    """Run ``python -m edge.cli run --config CONFIG``; restart it 1-2 s after any exit.

    Peak memory is the largest ``VmHWM`` of any of its processes; one whose resident
    memory passes ``memory_max_mb`` is killed (what ``MemoryMax=`` does).
    """

    workdir: Path
    config: Path
    t0: float
    memory_max_mb: float = 2048.0
    seed: int = 0
    exits: list[Exit] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    peak_kb: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "service.log"
        self._rng = random.Random(self.seed + 1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._kill_reason = ""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        self._thread.start()

    def running_pid(self) -> int | None:
        with self._lock:
            p = self.proc
        return p.pid if p is not None and p.poll() is None else None

    def send(self, sig: int, reason: str = "") -> int | None:
        """Send ``sig`` to the running service; its pid, or None when none runs."""
        with self._lock:
            p = self.proc
            if p is None or p.poll() is not None:
                return None
            if sig == signal.SIGKILL:
                self._kill_reason = reason or "SIGKILL"
            p.send_signal(sig)
            return p.pid

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("CRYSTAL_EDGE_STATE_DIR", None)
        env.pop("NOTIFY_SOCKET", None)
        with self._lock:
            if self._stopping.is_set():
                return None
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "edge.cli", "run", "--config", str(self.config)],
                    cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
            self._kill_reason = ""
            self.starts.append(self.now())
            return self.proc

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                              if line.startswith(("VmHWM:", "VmRSS:")))
                self.peak_kb = max(self.peak_kb, int(fields.get("VmHWM", "0 kB").split()[0]))
                if int(fields.get("VmRSS", "0 kB").split()[0]) > self.memory_max_mb * 1024:
                    self.send(signal.SIGKILL, "memory_max")
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            proc = self._spawn()
            if proc is None:
                return
            started = self.now()
            self._watch(proc)
            t = self.now()
            self.exits.append(Exit(t=round(t, 2), code=proc.returncode,
                                   uptime_s=round(t - started, 2),
                                   by_supervisor=self._kill_reason))
            note = f" ({self._kill_reason})" if self._kill_reason else ""
            print(f"[{t:7.1f} s] service exited with {proc.returncode}{note}",
                  file=sys.stderr, flush=True)
            self._stopping.wait(self._rng.uniform(1.0, 2.0))

    def stop(self) -> dict[str, object]:
        """SIGTERM and wait ``TimeoutStopSec``; then SIGKILL. The final exit."""
        self._stopping.set()
        t = time.monotonic()
        pid = self.send(signal.SIGTERM)
        self._thread.join(TIMEOUT_STOP_S)
        timed_out = self._thread.is_alive()
        if timed_out:
            self.send(signal.SIGKILL, "stop timeout")
            self._thread.join(10)
        last = self.exits.pop() if self.exits and pid is not None else None
        return {"exit_code": last.code if last else None,
                "stop_s": round(time.monotonic() - t, 2), "killed_after_timeout": timed_out}


def systemd_notes(exits: list[Exit], starts: list[float]) -> list[str]:
    """Exits during the run after which the real unit would have left the appliance down.

    The start limit counts only the starts that follow an exit the service caused itself
    (not the soak's own ``kill -9``): systemd counts those too, but they are the soak's.
    """
    notes = []
    for e in exits:
        if e.code == 2:
            notes.append(f"{e.t:.1f} s: exit 2, would stay down (RestartPreventExitStatus=2)")
        elif e.code == 0:
            notes.append(f"{e.t:.1f} s: exit 0, would stay down (Restart=on-failure)")
    own = [t for i, t in enumerate(starts)
           if i == 0 or i > len(exits) or exits[i - 1].by_supervisor != "injected kill -9"]
    for i in range(START_LIMIT_BURST, len(own)):
        if own[i] - own[i - START_LIMIT_BURST] < START_LIMIT_INTERVAL_S:
            notes.append(f"{own[i]:.1f} s: {START_LIMIT_BURST + 1} starts in "
                         f"{START_LIMIT_INTERVAL_S:.0f} s after the service's own exits, "
                         f"would stay down (StartLimitBurst={START_LIMIT_BURST})")
            break
    return notes
