"""The release: what goes to the device, built once on the workstation for all hosts.

A release is the tracked source tree (``git ls-files``) minus what only development
needs (tests, benchmarks, docs, CI, this deploy tool), plus:

* ``wheels/crystal_psd-<version>-py3-none-any.whl``: the package, built here, so the
  device never needs a build backend (JetPack 6's setuptools 59 cannot build a PEP 621
  project);
* ``.deploy/config.toml``: the configuration given with ``CONFIG=`` (if any);
* ``RELEASE.json``: name, version, git commit, dirty flag, build time, file count.

The name is ``<version>-<UTC timestamp>`` (e.g. ``0.1.0-20261130T013000Z``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.names import BadName, check_release_name

#: Path prefixes of tracked files that never go to a device.
EXCLUDE_PREFIXES = ("tests/", "bench/", "docs/", ".ci/", ".github/", "deploy/")
EXCLUDE_FILES = (".gitignore", ".gitattributes")
#: Where an example configuration may live in the tree (first existing one is used for a
#: host that has no configuration yet and was given no CONFIG=).
DEFAULT_CONFIG_CANDIDATES = (
    "examples/config.toml", "config/crystal-edge.toml", "config/config.toml", "config/edge.toml",
    "configs/crystal-edge.toml", "configs/edge.toml", "config/example.toml",
    "configs/example.toml", "edge/config.example.toml",
)
CONFIG_IN_RELEASE = ".deploy/config.toml"


class ReleaseError(Exception):
    """The release cannot be built (not a git checkout, no version, wheel build failed)."""


@dataclass
class Release:
    name: str
    version: str
    path: Path  # local staging directory (its contents are what the device receives)
    files: list[str]
    commit: str
    dirty: bool
    config_in_release: str | None  # path inside the release of the config to install
    config_sha256: str | None
    wheel: str | None = None  # file name under wheels/ once built (see ensure_wheel)
    wheel_source: Path | None = None  # a prebuilt wheel to use instead of building
    python: str | None = None  # Python that builds the wheel
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ensure_wheel(self) -> str:
        """Build (or copy) the wheel once, on first need: hosts that fail their checks
        never wait for it. Thread-safe; ReleaseError if the build fails."""
        with self._lock:
            if self.wheel is None:
                if self.wheel_source is not None:
                    (self.path / "wheels").mkdir(exist_ok=True)
                    shutil.copy2(self.wheel_source, self.path / "wheels" / self.wheel_source.name)
                    self.wheel = self.wheel_source.name
                else:
                    self.wheel = build_wheel(self.path, self.path / "wheels", python=self.python)
                self.write_info()
            return self.wheel

    def write_info(self) -> None:
        info = {"name": self.name, "version": self.version, "commit": self.commit,
                "dirty": self.dirty, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
                "files": len(self.files), "wheel": self.wheel, "config": self.config_in_release}
        (self.path / "RELEASE.json").write_text(json.dumps(info, indent=2) + "\n",
                                                encoding="utf-8")


def project_version(repo: Path) -> str:
    text = (repo / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    if not m:
        raise ReleaseError(f"{repo / 'pyproject.toml'}: no version = \"...\" line")
    return m.group(1)


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             check=True, timeout=60)
    except FileNotFoundError:
        raise ReleaseError("git is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise ReleaseError(f"git {' '.join(args)}: {exc.stderr.strip()}") from None
    return out.stdout


def release_files(repo: Path) -> list[str]:
    """Tracked files that belong on a device (working-tree content, deleted ones skipped)."""
    listed = _git(repo, "ls-files", "-z").split("\0")
    files = []
    for rel in listed:
        if not rel or rel.startswith(EXCLUDE_PREFIXES) or rel in EXCLUDE_FILES:
            continue
        if (repo / rel).is_file():
            files.append(rel)
    if "pyproject.toml" not in files:
        raise ReleaseError(f"{repo}: pyproject.toml is not tracked by git")
    return sorted(files)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_wheel(src: Path, out_dir: Path, *, python: str | None = None) -> str:
    """Build the pure-Python wheel of the staged tree; returns its file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python or sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
           "--no-build-isolation", "--disable-pip-version-check", "-q", "-w", str(out_dir),
           str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    # in-tree build leftovers must not end up on the device
    for junk in ("build", *(p.name for p in src.glob("*.egg-info"))):
        shutil.rmtree(src / junk, ignore_errors=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ReleaseError("wheel build failed (needs setuptools>=68 in the deploying "
                           "Python): " + " | ".join(tail))
    wheels = sorted(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise ReleaseError(f"expected one wheel in {out_dir}, found {len(wheels)}")
    return wheels[0].name


def build_release(repo: Path, staging_root: Path, *, config: Path | None = None,
                  name: str | None = None, wheel: Path | None = None,
                  python: str | None = None) -> Release:
    """Stage the release tree under ``staging_root/<name>``; the wheel comes later
    (:meth:`Release.ensure_wheel`)."""
    repo = repo.resolve()
    version = project_version(repo)
    files = release_files(repo)
    commit = _git(repo, "rev-parse", "--short=12", "HEAD").strip()
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no").strip())
    name = name or f"{version}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:  # the name becomes a directory here and on every target
        check_release_name(name, "release name")
    except BadName as exc:
        raise ReleaseError(str(exc)) from None
    dest = staging_root / name
    if dest.exists():
        shutil.rmtree(dest)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)

    config_rel: str | None = None
    config_sha: str | None = None
    if config is not None:
        config_rel = CONFIG_IN_RELEASE
        (dest / config_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, dest / config_rel)
    else:
        for cand in DEFAULT_CONFIG_CANDIDATES:
            if (dest / cand).is_file():
                config_rel = cand
                break
    if config_rel is not None:
        config_sha = sha256_file(dest / config_rel)

    release = Release(name=name, version=version, path=dest, files=files, commit=commit,
                      dirty=dirty, config_in_release=config_rel, config_sha256=config_sha,
                      wheel_source=wheel, python=python)
    release.write_info()
    return release


_L4T_RE = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>[\d.]+)")
#: L4T major -> JetPack major (for messages; the check is on L4T).
JETPACK_OF_L4T = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}


def parse_l4t(line: str) -> tuple[int, str] | None:
    """``# R36 (release), REVISION: 4.3, ...`` -> ``(36, "36.4.3")``; None if unparsable."""
    m = _L4T_RE.search(line or "")
    if not m:
        return None
    major = int(m.group("major"))
    return major, f"{major}.{m.group('rev')}"
