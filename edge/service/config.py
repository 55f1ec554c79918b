"""The appliance configuration: one TOML file, validated in full at start-up.

:class:`EdgeConfig` is a tree of pydantic models (``extra="forbid"``: a misspelt key is
an error, not a silent default). The sections of the other modules are imported, not
redefined: ``[measure]`` (:mod:`edge.measure`), ``[psd]`` (:mod:`edge.psd`),
``[backend]`` (:mod:`edge.backends`), ``[quality]``, ``[roi]`` (:mod:`edge.vision.quality`,
:mod:`edge.vision.roi`), ``[sinks.<name>]`` (:mod:`edge.sinks`: ``jsonl``, ``mqtt``),
``[logging]`` (:mod:`edge.service.logsetup`), ``[metrics]`` (:mod:`edge.service.metrics`);
the service's own sections (``[device]``, ``[model]``, ``[optics]``, ``[health]``,
``[pipeline]``) are in :mod:`edge.service.sections`.

A top-level ``[mqtt]`` section (the old name of ``[sinks.mqtt]``) is still read, with one
deprecation warning; giving both is an error.

:func:`load_config` turns every problem into one :class:`~edge.errors.UserError` line
that names the file, the key path and the problem (unknown key, wrong type, missing
file, TOML syntax error with line and column). Types are strict: ``"yes"`` is not a
boolean, ``"1883"`` not an integer (an integer is still a float). A ``[source]`` without
``type`` is the folder source. A sink whose ``host`` is set but whose ``enabled`` is left
out logs one warning (it stays off). Relative paths in the file are relative to the
file's directory. ``examples/config.toml`` is a complete commented example, generated
from these models by ``scripts/example_config.py``.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.backends.config import BackendConfig
from edge.errors import UserError
from edge.measure import MeasureConfig
from edge.modelpath import locate_model
from edge.psd import PsdConfig
from edge.service.logsetup import LoggingConfig
from edge.service.metrics import MetricsConfig
from edge.service.pipeline.batch import BatchConfig
from edge.service.sections import (
    DeviceConfig,
    HealthConfig,
    ModelSection,
    OpticsConfig,
    PipelineConfig,
)
from edge.service.state import StateConfig
from edge.sinks import SINKS, SinksConfig
from edge.sources import SOURCES, SourceConfig
from edge.sources.folder import FolderSourceConfig
from edge.vision.decode import DecodeConfig
from edge.vision.ood import DomainConfig
from edge.vision.quality import QualityConfig
from edge.vision.roi import RoiConfig
from edge.web.config import WebConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

log = logging.getLogger(__name__)

DEPRECATED_SECTIONS: dict[str, tuple[str, str]] = {"mqtt": ("sinks", "mqtt")}
"""Old top-level section -> (table, key) it is read as."""


class EdgeConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="appliance id")
    source: SourceConfig = Field(
        default_factory=FolderSourceConfig,
        description="capture source; 'type' selects folder | opencv | synthetic")
    model: ModelSection = Field(default_factory=ModelSection, description="segmentation model")
    backend: BackendConfig = Field(default_factory=BackendConfig, description="inference backend")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="when batches close")
    optics: OpticsConfig = Field(default_factory=OpticsConfig, description="pixel size")
    state: StateConfig = Field(default_factory=StateConfig, description="state directory")
    measure: MeasureConfig = Field(default_factory=MeasureConfig,
                                   description="crystal separation and measurement")
    psd: PsdConfig = Field(default_factory=PsdConfig, description="size classes and statistics")
    quality: QualityConfig = Field(default_factory=QualityConfig,
                                   description="frame quality gate")
    roi: RoiConfig = Field(default_factory=RoiConfig, description="region of interest")
    domain: DomainConfig = Field(default_factory=DomainConfig,
                                 description="out-of-domain score and rejection")
    sinks: SinksConfig = Field(default_factory=SinksConfig,
                               description="result sinks, one [sinks.<name>] each")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log format")
    health: HealthConfig = Field(default_factory=HealthConfig, description="health snapshots")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig,
                                   description="optional Prometheus endpoint (loopback)")
    web: WebConfig = Field(default_factory=WebConfig, description="read-only operators' page")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig,
                                     description="threads and queues")
    decode: DecodeConfig = Field(default_factory=DecodeConfig,
                                 description="limits checked before a frame file is decoded")

    def device_id(self) -> str:
        """``[device] id``, else ``[sinks.mqtt] device_id``, else the host name."""
        return (self.device.id or self.sinks.mqtt.device_id
                or socket.gethostname().split(".")[0])


# ------------------------------------------------------------------ loading
def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    # A discriminated union puts the tag into the location: source.folder.poll_s.
    if len(parts) >= 2 and parts[0] == "source" and parts[1] in SOURCES:
        parts.pop(1)
    return ".".join(p if not p.isdigit() else f"[{p}]" for p in parts).replace(".[", "[")


def describe_validation_error(exc: ValidationError, *,
                              renamed: dict[str, str] | None = None) -> str:
    """First problem of a validation error as ``key.path: problem`` (plus a count).

    ``renamed`` maps a key path prefix to the one the file used (a deprecated section).
    """
    errors = exc.errors()
    first = errors[0]
    raw_loc = tuple(first.get("loc", ()))
    loc = _loc(raw_loc)
    for new, old in (renamed or {}).items():
        if loc == new or loc.startswith(new + "."):
            loc = old + loc[len(new):]
    kind = first.get("type", "")
    if kind == "extra_forbidden" and len(raw_loc) == 2 and raw_loc[0] == "sinks":
        msg = f"unknown sink; one of {', '.join(SINKS)}"
    elif kind == "extra_forbidden":
        msg = "unknown key (misspelt? see examples/config.toml or `crystal-edge config-schema`)"
    elif kind == "union_tag_invalid":
        msg = f"unknown type {first.get('input', {}).get('type')!r}; one of {', '.join(SOURCES)}"
    else:
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in first and kind not in ("missing",) and not isinstance(
                first["input"], dict):
            msg += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
        if len(errors) > 1 else ""
    return f"{loc or '(top level)'}: {msg}{more}"


def parse_config(data: dict[str, Any], *, source: str = "<config>",
                 base_dir: str | Path | None = None) -> EdgeConfig:
    """Validate a parsed TOML/JSON mapping; resolve relative paths against ``base_dir``."""
    data, renamed = adopt_deprecated_sections(data, source=source)
    try:
        cfg = validate_strict(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {describe_validation_error(exc, renamed=renamed)}") \
            from None
    if base_dir is not None:
        resolve_paths(cfg, Path(base_dir))
    warn_disabled_sinks(data, renamed, source=source)
    return cfg


def warn_disabled_sinks(data: dict[str, Any], renamed: dict[str, str], *,
                        source: str = "<config>") -> None:
    """Log one warning per sink whose file sets a ``host`` but leaves ``enabled`` out.

    A broker address without ``enabled`` looks configured yet publishes nothing; the
    sink stays off (a silent switch-on would surprise the other way), and the log says so.
    An explicit ``enabled = false`` is a choice and is not warned about. ``renamed``
    names the section as the file wrote it (the old ``[mqtt]``).
    """
    sinks = data.get("sinks")
    for name, section in (sinks.items() if isinstance(sinks, dict) else ()):
        if not isinstance(section, dict) or "host" not in section or "enabled" in section:
            continue
        key = renamed.get(f"sinks.{name}", f"sinks.{name}")
        log.warning("%s: %s.host is set but %s.enabled is false (the default): nothing "
                    "is published there; add enabled = true to [%s] (or remove host)",
                    source, key, key, key)


def validate_strict(data: dict[str, Any]) -> EdgeConfig:
    """Validate without type coercion: ``enabled = "yes"`` or ``port = "1883"`` is an error.

    A ``[source]`` without ``type`` is the folder source.

    The mapping is validated as JSON in pydantic's strict mode, where a string is still a
    path and an array still a tuple (TOML has neither) and an integer is still a float
    (``px_size_um = 2``), but a string is never a number or a boolean. TOML dates and
    times, which no key takes, arrive as strings and are refused by the key's type.
    """
    source = data.get("source")
    if isinstance(source, dict) and "type" not in source:
        # A [source] without type is the documented default source, the folder.
        data = {**data, "source": {"type": "folder", **source}}
    return EdgeConfig.model_validate_json(json.dumps(data, default=str), strict=True)


def adopt_deprecated_sections(data: dict[str, Any], *, source: str = "<config>"
                              ) -> tuple[dict[str, Any], dict[str, str]]:
    """Read each old top-level section (:data:`DEPRECATED_SECTIONS`) as its new one.

    Returns the mapping to validate (``data`` itself when nothing moved) and, for error
    messages, new key path -> old one. Logs one warning per moved section; raises
    :class:`~edge.errors.UserError` when a file gives both the old and the new section.
    """
    renamed: dict[str, str] = {}
    for old, (table, key) in DEPRECATED_SECTIONS.items():
        if old not in data:
            continue
        parent = data.get(table, {})
        if not isinstance(parent, dict):
            continue  # validation names the broken [table]
        if key in parent:
            raise UserError(f"{source}: [{old}] and [{table}.{key}] are both given; "
                            f"[{old}] is the old name of [{table}.{key}]: keep only "
                            f"[{table}.{key}]")
        log.warning("%s: section [%s] is deprecated, read as [%s.%s]; rename it to "
                    "[%s.%s]", source, old, table, key, table, key)
        section = data[old]
        data = {k: v for k, v in data.items() if k != old}
        data[table] = {**parent, key: section}
        renamed[f"{table}.{key}"] = old
    return data, renamed


def load_config(path: str | Path) -> EdgeConfig:
    """Read and validate a TOML configuration file (see the module docstring)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{p}: configuration file not found") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read the configuration: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: TOML syntax error: {exc}") from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent)


def _rel(base: Path, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Path):
        return value if value.expanduser().is_absolute() else base / value
    text = str(value)
    if not text or text == "-":
        return value
    pp = Path(text).expanduser()
    return str(pp if pp.is_absolute() else base / pp)


def resolve_paths(cfg: EdgeConfig, base: Path) -> None:
    """Make the file paths of ``cfg`` absolute, relative to ``base`` (in place)."""
    cfg.model.path = locate_model(cfg.model.path, base=base)
    if cfg.state.dir is not None:
        cfg.state.dir = _rel(base, cfg.state.dir)
    src = cfg.source
    if isinstance(src, FolderSourceConfig):
        src.path = _rel(base, src.path)
        src.move_to = _rel(base, src.move_to)
        src.failed_to = _rel(base, src.failed_to)
    cfg.sinks.jsonl.path = _rel(base, cfg.sinks.jsonl.path)
    cfg.web.token_file = _rel(base, cfg.web.token_file)
    if cfg.backend.engine_cache_dir is not None:
        cfg.backend.engine_cache_dir = _rel(base, cfg.backend.engine_cache_dir)
    mqtt = cfg.sinks.mqtt
    for key in ("ca_file", "cert_file", "key_file", "password_file", "outbox_path"):
        setattr(mqtt, key, _rel(base, getattr(mqtt, key)))


# ------------------------------------------------------------------ output
def config_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file."""
    schema = EdgeConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "crystal-edge configuration", **schema}


def config_json(cfg: EdgeConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json"), indent=2)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def to_toml(data: dict[str, Any], *, _prefix: str = "") -> str:
    """A nested plain-JSON mapping as TOML: dict values become tables; None values
    (TOML has no null) appear as ``# key = (unset)`` comments."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif v is None:
            lines.append(f"# {_toml_key(k)} = (unset)")
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    chunks = ["\n".join(lines)] if lines else []
    for k, v in tables:
        name = f"{_prefix}.{_toml_key(k)}" if _prefix else _toml_key(k)
        body = to_toml(v, _prefix=name)
        chunks.append(f"[{name}]" + ("\n" + body if body else ""))
    return "\n\n".join(c.strip("\n") for c in chunks)


def config_toml(cfg: EdgeConfig) -> str:
    return to_toml(cfg.model_dump(mode="json")) + "\n"


def check_files(cfg: EdgeConfig) -> None:
    """The files the configuration names exist (model + metadata, folder source dir)."""
    from edge.modelmeta import check_model_file, load_meta

    try:
        check_model_file(cfg.model.path)
    except UserError as exc:
        raise UserError(f"model.path: {exc}") from None
    load_meta(cfg.model.path)
    src = cfg.source
    if isinstance(src, FolderSourceConfig) and not Path(src.path).is_dir():
        raise UserError(f"source.path {src.path}: not a directory")
    if cfg.web.enabled and cfg.web.token_file is not None:
        from edge.web.auth import read_token
        read_token(cfg.web.token_file)
