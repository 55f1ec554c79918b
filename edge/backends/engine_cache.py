"""The TensorRT engine cache: keys, lookup, LRU eviction and the timing cache file.

Pure file handling (no TensorRT import): :mod:`edge.backends.tensorrt` builds and loads
the engines. The cache key is sha256 over (ONNX sha256, TensorRT version, GPU name,
precision, max batch, input size); any change gives a new key, so a stale engine is never
loaded. The cache keeps a few engines per model (``[backend] engine_cache_keep``, least
recently used evicted; an engine's modification time is its last use), so a source that
alternates between frame sizes reuses its engines instead of rebuilding; engines of
another TensorRT version or GPU are removed when a new one is written, as they can never
load again. Each engine has a JSON sidecar with the key fields, which says *why* a
rebuild happened. A TensorRT timing cache per GPU and TensorRT version
(``timing-<gpu>-trt<version>.cache`` in the same directory) is loaded before and saved
after every build, so later builds skip the layer timings measured before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".engine.json"


class EngineKey(BaseModel):
    """Everything a serialised engine depends on. Equal keys <=> reusable engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field("model", description="model name (file stem), for file names")
    onnx_sha256: str = Field("", description="sha256 of the ONNX file")
    tensorrt_version: str = Field("", description="tensorrt.__version__")
    gpu_name: str = Field("", description="CUDA device name")
    precision: str = Field("fp16", description="fp16 | fp32")
    max_batch: int = Field(1, description="largest batch of the optimisation profile")
    input_hw: tuple[int, int] = Field((0, 0), description="network input (H, W)")

    def digest(self) -> str:
        """sha256 hex of the canonical JSON of the key (model_name excluded)."""
        fields = self.model_dump(mode="json", exclude={"model_name"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def file_stem(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model_name)
        return f"{safe}-{self.digest()[:16]}"


def engine_path(cache_dir: str | Path, key: EngineKey) -> Path:
    """Where the engine for ``key`` lives in ``cache_dir``."""
    return Path(cache_dir) / f"{key.file_stem()}{ENGINE_SUFFIX}"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name[: -len(ENGINE_SUFFIX)] + SIDECAR_SUFFIX)


def lookup_engine(cache_dir: str | Path, key: EngineKey) -> tuple[Path | None, str]:
    """Find a reusable cached engine for ``key``.

    Returns ``(path, "cached")`` when one exists whose sidecar matches ``key``, else
    ``(None, reason)`` where reason says why a build is needed: no engine yet, or which
    key fields differ from the engine cached for the same model (e.g. ``"onnx_sha256
    changed"``), or a damaged sidecar.
    """
    cache_dir = Path(cache_dir)
    path = engine_path(cache_dir, key)
    if path.is_file():
        try:
            stored = EngineKey.model_validate(json.loads(_sidecar(path).read_text()))
        except (OSError, ValueError) as exc:
            return None, f"sidecar of {path.name} unreadable ({type(exc).__name__})"
        if stored == key:
            return path, "cached"
        return None, "sidecar of {} differs in {}".format(path.name, ", ".join(_diff(stored, key)))
    previous = _previous_keys(cache_dir, key.model_name)
    if not previous:
        return None, f"no cached engine for {key.model_name} in {cache_dir}"
    changed = sorted({f for old in previous for f in _diff(old, key)})
    return None, "{} changed since the cached engine".format(", ".join(changed) or "key")


def _diff(a: EngineKey, b: EngineKey) -> list[str]:
    da, db = a.model_dump(), b.model_dump()
    return [k for k in da if k != "model_name" and da[k] != db[k]]


def _previous_keys(cache_dir: Path, model_name: str) -> list[EngineKey]:
    keys = []
    if not cache_dir.is_dir():
        return keys
    for side in sorted(cache_dir.glob(f"*{SIDECAR_SUFFIX}")):
        try:
            k = EngineKey.model_validate(json.loads(side.read_text()))
        except (OSError, ValueError):
            continue
        if k.model_name == model_name:
            keys.append(k)
    return keys


def touch_engine(path: Path) -> None:
    """Mark ``path`` as used now (its mtime orders the LRU eviction).

    The time is set explicitly: the kernel's own file times are coarse (a few ms), too
    coarse to order uses that follow each other quickly.
    """
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError as exc:  # a read-only cache still serves its engines
        log.debug("cannot mark %s as used: %s", path, exc)


def _remove_engine(path: Path) -> None:
    for p in (path, _sidecar(path)):
        p.unlink(missing_ok=True)


def evict_engines(cache_dir: str | Path, key: EngineKey, keep: int) -> list[Path]:
    """Remove this model's engines that cannot serve again, then all but the ``keep``
    most recently used (``key``'s own engine counts as the newest).

    An engine for another TensorRT version or GPU never loads here again, so it goes
    first; engines of other input sizes, precisions or ONNX files stay until the limit.
    Returns the removed engine paths.
    """
    cache_dir = Path(cache_dir)
    removed = []
    others = []
    for old in _previous_keys(cache_dir, key.model_name):
        if old == key:
            continue
        path = engine_path(cache_dir, old)
        if (old.tensorrt_version, old.gpu_name) != (key.tensorrt_version, key.gpu_name):
            _remove_engine(path)
            removed.append(path)
        else:
            try:
                others.append((path.stat().st_mtime_ns, path))
            except OSError:  # a sidecar without its engine
                _remove_engine(path)
    others.sort(reverse=True)
    for _, path in others[max(0, keep - 1):]:
        _remove_engine(path)
        removed.append(path)
    return removed


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def store_engine(cache_dir: str | Path, key: EngineKey, data: bytes, *, keep: int = 3) -> Path:
    """Write ``data`` + sidecar atomically; keep at most ``keep`` engines of this model
    (:func:`evict_engines`)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = engine_path(cache_dir, key)
    for gone in evict_engines(cache_dir, key, keep):
        log.info("engine cache: removed %s (least recently used or unusable)", gone.name)
    _write_atomic(path, data)
    _sidecar(path).write_text(json.dumps(key.model_dump(mode="json"), indent=2) + "\n")
    touch_engine(path)
    return path


def timing_cache_path(cache_dir: str | Path, *, gpu: str, tensorrt_version: str) -> Path:
    """The TensorRT timing cache for one GPU and TensorRT version in ``cache_dir``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{gpu}-trt{tensorrt_version}")
    return Path(cache_dir) / f"timing-{safe}.cache"


def attach_timing_cache(config: Any, path: Path | None) -> None:
    """Give the builder config the timing cache stored at ``path`` (an empty one when
    there is none, or when TensorRT refuses the stored one)."""
    data = b""
    if path is not None and path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("%s: timing cache unreadable (%s); timing every layer", path, exc)
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, False):
                return
        except Exception as exc:  # TensorRT raises its own types for a damaged blob
            log.debug("timing cache %s refused: %s", path, exc)
        log.warning("%s: timing cache not usable (damaged or from another TensorRT); "
                    "starting an empty one", path)
    config.set_timing_cache(config.create_timing_cache(b""), False)


def save_timing_cache(config: Any, path: Path | None) -> None:
    """Write the builder config's timing cache to ``path`` (atomic; a failure only warns:
    the engine is built either way)."""
    if path is None:
        return
    try:
        _write_atomic(path, bytes(config.get_timing_cache().serialize()))
    except (OSError, RuntimeError, AttributeError) as exc:
        log.warning("%s: timing cache not saved: %s", path, exc)
