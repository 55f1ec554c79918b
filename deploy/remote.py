"""SSH and rsync to one target (the bash scripts run there: :mod:`deploy.remote_scripts`).

One SSH master connection per host (``ControlMaster``) carries every step, so a deploy
costs one handshake per host. Scripts run as ``bash -c SCRIPT`` with their arguments
as positional parameters. A non-root SSH user gets ``sudo -n`` in front of the scripts
and of the remote rsync (passwordless sudo required).

Every path on the target is under ``ROOT`` (``--target-root``, default ``/``).

Root runs code from a release (the install smoke test, the unit re-installed on
rollback, ``/usr/local/bin/crystal-edge``), so releases arrive owned by root whatever
uid the workstation has (rsync ``--no-owner --no-group --chmod=go-w``) and the install
and rollback scripts make the release root's and unwritable by anyone else before they
run anything from it. Host names are checked by :mod:`deploy.names` and follow ``--``
on the ssh command line, so none is read as an option.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field

SERVICE = "crystal-edge.service"


class RemoteError(Exception):
    """A remote step failed; the message is one line for the summary table."""


@dataclass
class Target:
    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    options: list[str] = field(default_factory=list)  # extra "-o Key=Value"
    control_dir: str | None = None
    sudo: bool = False
    connect_timeout: int = 10

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def rsync_dest(self) -> str:
        """``dest`` for rsync's ``HOST:PATH``: an IPv6 address goes in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    def ssh_args(self) -> list[str]:
        args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15"]
        if self.port:
            args += ["-p", str(self.port)]
        if self.identity:
            args += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.control_dir:
            args += ["-o", "ControlMaster=auto", "-o",
                     f"ControlPath={self.control_dir}/%C", "-o", "ControlPersist=120"]
        for opt in self.options:
            args += ["-o", opt]
        return args

    def run(self, script: str, *params: str, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a bash script on the target (``sudo -n`` when :attr:`sudo`).

        The script travels as the argument of ``bash -c`` (quoted once for the remote
        login shell), not on stdin, so no command in it can swallow the rest of it; its
        stdin is empty.
        """
        remote = "bash -c " + shlex.quote(script) + " crystal-deploy " + " ".join(
            shlex.quote(p) for p in params)
        if self.sudo:
            remote = "sudo -n " + remote
        try:
            result = subprocess.run([*self.ssh_args(), "--", self.dest, remote],
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"timed out after {timeout:.0f} s") from None
        if check and result.returncode != 0:
            if result.returncode == 255:
                raise RemoteError("ssh: " + _last_line(result.stderr, "connection failed"))
            raise RemoteError(_last_line(result.stderr or result.stdout,
                                         f"exit {result.returncode}"))
        return result

    def rsync(self, src: str, dest_path: str, *extra: str,
              timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``rsync -a`` a local directory to a path on the target, owned by the receiving
        user (root) and writable by it alone, never by the workstation's uid."""
        ssh = " ".join(shlex.quote(a) for a in self.ssh_args())
        cmd = ["rsync", "-a", "--no-owner", "--no-group", "--chmod=go-w", "-e", ssh, *extra]
        if self.sudo:
            cmd += ["--rsync-path", "sudo -n rsync"]
        cmd += ["--", src, f"{self.rsync_dest}:{dest_path}"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        except FileNotFoundError:
            raise RemoteError("rsync is not installed on this workstation") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"rsync timed out after {timeout:.0f} s") from None
        if result.returncode != 0:
            raise RemoteError("rsync: " + _last_line(result.stderr, f"exit {result.returncode}"))
        return result

    def close(self) -> None:
        if self.control_dir:
            subprocess.run([*self.ssh_args(), "-O", "exit", "--", self.dest],
                           capture_output=True,
                           timeout=15, check=False)


def _last_line(text: str, default: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else default


def parse_kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            out[key] = value
    return out


def parse_kv_all(text: str, key: str) -> list[str]:
    """Every value of a repeated ``key=value`` line."""
    return [line.partition("=")[2] for line in text.splitlines()
            if line.partition("=")[0] == key]
