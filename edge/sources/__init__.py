"""Capture sources: where frames come from (a watched folder, a camera, a generator).

The registry is explicit: :data:`SOURCES` maps the ``[source] type`` to the module and
class; :func:`build_source` constructs the configured one. See :mod:`edge.sources.base`
for the interface. The folder source keeps its bookkeeping in :mod:`edge.sources.ledger`
and lists its folder with :mod:`edge.sources.folderscan`; every source decodes through
:mod:`edge.vision.decode`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Union

from pydantic import Field

from edge.sources.base import Frame, FrameSource
from edge.sources.folder import FolderSourceConfig
from edge.sources.opencv import OpenCVSourceConfig
from edge.sources.synthetic import SyntheticSourceConfig
from edge.vision.decode import DecodeConfig

#: ``[source] type`` -> "module:Class"
SOURCES: dict[str, str] = {
    "folder": "edge.sources.folder:FolderSource",
    "opencv": "edge.sources.opencv:OpenCVSource",
    "synthetic": "edge.sources.synthetic:SyntheticSource",
}

SourceConfig = Annotated[
    Union[FolderSourceConfig, OpenCVSourceConfig, SyntheticSourceConfig],  # noqa: UP007
    Field(discriminator="type"),
]
"""The ``[source]`` section: one of the source configs, chosen by ``type``."""


def build_source(config: FolderSourceConfig | OpenCVSourceConfig | SyntheticSourceConfig, *,
                 state_dir: str | Path, px_size_um: float = 1.45,
                 decode: DecodeConfig | None = None) -> FrameSource:
    """Construct (not yet open) the source named by ``config.type``.

    ``px_size_um`` ([optics]) is passed to the synthetic source, which renders at it;
    ``decode`` ([decode]) to the folder source, which decodes files.
    """
    module_name, cls_name = SOURCES[config.type].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if config.type == "synthetic":
        return cls(config, state_dir=state_dir, px_size_um=px_size_um)
    if config.type == "folder":
        return cls(config, state_dir=state_dir, decode=decode)
    return cls(config, state_dir=state_dir)


__all__ = ["SOURCES", "Frame", "FrameSource", "SourceConfig", "build_source"]
