"""Whether the service does its job: the problems ``crystal-edge status`` names.

Pure functions over what :func:`edge.service.status.collect_status` read (the ``status.json``
snapshot as a :class:`~edge.service.snapshot.StatusSnapshot`, its age, the outbox file,
systemd's answer). Each problem is one line with a
level:

* ``DOWN``: nothing is being measured or delivered: ``status.json`` missing or not
  rewritten for a few health intervals, the process it names is gone, the service
  stopped, or it reports itself unhealthy (a dead or stuck stage);
* ``DEGRADED``: frames are measured but something needs a person: a sink cannot deliver
  (MQTT disconnected with a last error or reports waiting), the outbox grows (too many
  reports waiting, or the oldest one waits too long), a state file was found corrupt.

The overall verdict is the worst level, ``OK`` without problems.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from edge.service.snapshot import StatusSnapshot
    from edge.service.status import StatusReport

__all__ = ["DEFAULT_STALE_AFTER_S", "MIN_STALE_AFTER_S", "Problem", "StatusLimits",
           "find_problems", "overall", "pid_alive", "stale_after"]

Level = Literal["DOWN", "DEGRADED"]

#: status.json is stale after this many missed rewrites (its ``health_interval_s``) ...
STALE_INTERVALS = 3.0
#: ... but never sooner than this (a busy device may write late by a second or two).
MIN_STALE_AFTER_S = 10.0
#: Stale limit when status.json does not say how often it is written.
DEFAULT_STALE_AFTER_S = 30.0
#: Incident lines shown at most (the rest are counted).
MAX_INCIDENT_LINES = 5


@dataclass(frozen=True)
class Problem:
    """One line of ``crystal-edge status``: what is wrong, and how badly."""

    level: Level
    text: str


@dataclass(frozen=True)
class StatusLimits:
    """Thresholds of the verdict (``crystal-edge status`` options).

    Parameters
    ----------
    stale_after_s : float, optional
        ``status.json`` older than this means the service is hung or gone; None:
        :data:`STALE_INTERVALS` x the interval the file records, at least
        :data:`MIN_STALE_AFTER_S` (:data:`DEFAULT_STALE_AFTER_S` without one).
    outbox_max_reports : int
        More reports than this waiting in the MQTT outbox: the outbox grows.
    outbox_max_age_s : float
        The oldest waiting report older than this: the outbox grows.
    """

    stale_after_s: float | None = None
    outbox_max_reports: int = 100
    outbox_max_age_s: float = 600.0


def stale_after(snap: StatusSnapshot, limits: StatusLimits) -> float:
    """Seconds after which ``status.json`` (the snapshot ``snap``) counts as stale."""
    if limits.stale_after_s is not None:
        return limits.stale_after_s
    interval = snap.health_interval_s
    if interval is not None and interval > 0:
        return max(STALE_INTERVALS * float(interval), MIN_STALE_AFTER_S)
    return DEFAULT_STALE_AFTER_S


def pid_alive(pid: Any) -> bool | None:
    """Whether process ``pid`` runs (None: no usable pid, or it cannot be told)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (the service account)
        return True
    except OSError:
        return None
    try:  # a zombie has exited; only its parent has not collected it yet
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    return not (fields and fields[0] == "Z")


def overall(problems: list[Problem]) -> str:
    """``DOWN``, ``DEGRADED`` or ``OK``: the worst level among ``problems``."""
    levels = {p.level for p in problems}
    return "DOWN" if "DOWN" in levels else "DEGRADED" if levels else "OK"


def find_problems(rep: StatusReport, limits: StatusLimits) -> list[Problem]:
    """Every problem with the service, worst first (see the module docstring).

    While the service is not running, what its last snapshot says about sinks and stages
    is history, so only the outbox file and state-file incidents are judged besides.
    """
    snap = rep.snapshot
    down = list(_running_problems(rep))
    live = [] if down else [*_health_problems(snap), *_sink_problems(snap, rep.outbox_depth)]
    rest = [*_outbox_problems(rep, limits), *_incident_problems(snap)]
    return [*down, *live, *rest]


def _running_problems(rep: StatusReport) -> Iterator[Problem]:
    snap = rep.snapshot
    if rep.service == "failed":
        yield Problem("DOWN", "systemd: crystal-edge has failed (journalctl -u crystal-edge)")
    if rep.status_error is not None:
        yield Problem("DOWN", f"status.json {rep.status_error}")
        return
    if snap.state in ("stopped", "stopping"):
        reason = snap.stop_reason
        yield Problem("DOWN", f"service {snap.state}" + (f" ({reason})" if reason else ""))
    elif rep.pid_alive is False:
        yield Problem("DOWN", f"service not running: pid {snap.pid} from status.json is gone")
    elif rep.stale:
        yield Problem("DOWN", f"status.json not rewritten for {rep.status_age_s:.0f} s "
                              f"(limit {rep.stale_after_s:.0f} s): the service is hung or gone")
    elif snap.state == "starting":
        yield Problem("DEGRADED", "service starting" + (f" ({snap.busy})" if snap.busy else ""))


def _health_problems(snap: StatusSnapshot) -> Iterator[Problem]:
    # the service's own lines (a failed pipeline, a dead or stuck stage, a failing batch
    # close or required sink), one problem each
    lines = [x for x in snap.problems if x]
    for line in lines:
        yield Problem("DOWN", f"service unhealthy: {_one_line(line)}")
    if not lines and snap.healthy is False:
        yield Problem("DOWN", f"service unhealthy: {_unhealthy_reason(snap)}")
    source = snap.source
    if source.get("error") or source.get("healthy") is False:
        yield Problem("DEGRADED", f"source: {_one_line(source.get('error') or _reason(source))}")


def _unhealthy_reason(snap: StatusSnapshot) -> str:
    """Why, from the stages, when the snapshot names no problem line."""
    stages = {n: s for n, s in snap.stages.items() if not s.done}
    dead = [n for n, s in stages.items() if s.alive is False]
    if dead:
        return "stage(s) not running: " + ", ".join(dead)
    idle = {n: s.since_progress_s for n, s in stages.items()
            if s.since_progress_s is not None}
    if idle:
        name = max(idle, key=idle.__getitem__)
        return f"stage {name} without progress for {idle[name]:.0f} s"
    return "the service reports itself unhealthy"


def _sink_problems(snap: StatusSnapshot, outbox_depth: int | None) -> Iterator[Problem]:
    for name, s in snap.sinks.items():
        if s.get("error") or s.get("healthy") is False:
            yield Problem("DEGRADED",
                          f"sink {name}: {_one_line(s.get('error') or _reason(s))}")
            continue
        if s.get("connected") is not False:
            continue
        waiting = s.get("outbox_depth") if isinstance(s.get("outbox_depth"), int) else 0
        if "outbox_depth" in s and outbox_depth is not None:
            waiting = outbox_depth  # the outbox file is newer than the snapshot
        error = s.get("last_error")
        if waiting or error:
            text = f"sink {name}: cannot deliver ({s.get('connection') or 'disconnected'}"
            text += f": {_one_line(error)})" if error else ")"
            yield Problem("DEGRADED", text + (f", {waiting} report(s) waiting"
                                              if waiting else ""))


def _outbox_problems(rep: StatusReport, limits: StatusLimits) -> Iterator[Problem]:
    if rep.outbox_error is not None:
        yield Problem("DEGRADED", f"outbox unreadable: {rep.outbox_error}")
    if rep.outbox_depth is not None and rep.outbox_depth > limits.outbox_max_reports:
        yield Problem("DEGRADED", f"outbox: {rep.outbox_depth} reports waiting "
                                  f"(limit {limits.outbox_max_reports})")
    age = rep.outbox_oldest_age_s
    if age is not None and age > limits.outbox_max_age_s:
        yield Problem("DEGRADED", f"outbox: oldest report waiting for {age / 60:.0f} min "
                                  f"(limit {limits.outbox_max_age_s / 60:.0f} min)")


def _incident_problems(snap: StatusSnapshot) -> Iterator[Problem]:
    items = snap.state_file_incidents
    for item in items[:MAX_INCIDENT_LINES]:
        yield Problem("DEGRADED", f"state file: {_incident_text(item)}")
    if len(items) > MAX_INCIDENT_LINES:
        yield Problem("DEGRADED", f"state file: {len(items) - MAX_INCIDENT_LINES} more "
                                  "incident(s) in status.json")


def _incident_text(item: dict[str, Any]) -> str:
    """One incident (:class:`edge.service.statefiles.Incident`) in one line."""
    name = item.get("file") or "?"
    what = item.get("reason") or "corrupt"
    text = f"{name}: {_one_line(what)}"
    aside = item.get("moved_to")
    when = item.get("time")
    if aside:
        text += f", moved to {aside}"
    if item.get("kept"):
        text += f", {_one_line(item['kept'])}"
    return text + (f" ({when})" if when else "")


def _reason(d: dict[str, Any]) -> str:
    return str(d.get("reason") or d.get("last_error") or "unhealthy")


def _one_line(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
