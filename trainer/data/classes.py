"""``classes.json``: the classes of a labelled dataset and how labels store them."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.errors import UserError

CLASSES_FILE = "classes.json"


# ----------------------------------------------------------------------------- classes.json
class ClassEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(0, ge=0, le=65535,
                    description="value of this class in single-channel label images")
    name: str = Field("", min_length=1, description="class name, e.g. 'crystal'")


class ClassesFile(BaseModel):
    """The validated content of ``classes.json``."""

    model_config = ConfigDict(extra="forbid")

    classes: list[ClassEntry] = Field(
        default_factory=list, min_length=2,
        description="classes in network channel order; ids are the on-disk label values")
    crystal_class: int | str = Field(2, description="id (or name) of the crystal class")
    px_size_um: float | None = Field(None, gt=0, description="pixel size of the images (um)")
    palette: dict[str, tuple[int, int, int]] | None = Field(
        None, description="class name -> [r, g, b] for RGB colour-map labels")
    description: str = Field("", description="free text (e.g. where the data came from)")

    @field_validator("palette")
    @classmethod
    def _palette_range(cls, v: dict[str, tuple[int, int, int]] | None):
        if v is not None:
            for name, rgb in v.items():
                if any(c < 0 or c > 255 for c in rgb):
                    raise ValueError(f"palette colour of {name!r} out of 0..255: {list(rgb)}")
        return v


@dataclass(frozen=True)
class ClassSpec:
    """One class: contiguous ``index`` (network channel), on-disk ``value``, optional ``color``."""

    index: int
    name: str
    value: int
    color: tuple[int, int, int] | None = None


def load_classes(path: str | Path) -> tuple[ClassesFile, tuple[ClassSpec, ...], int]:
    """Read and check ``classes.json``.

    Returns
    -------
    (ClassesFile, classes in contiguous order, contiguous index of the crystal class)

    Raises
    ------
    UserError
        Naming the file and the field when it is missing, not JSON or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing (the dataset needs a {CLASSES_FILE}, see docs)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON: {exc}") from None
    try:
        cf = ClassesFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{path}: field '{loc}': {first['msg']}") from None
    ids = [c.id for c in cf.classes]
    names = [c.name for c in cf.classes]
    for what, seq in (("id", ids), ("name", names)):
        dup = [k for k, n in Counter(seq).items() if n > 1]
        if dup:
            raise UserError(f"{path}: field 'classes': duplicate {what} {dup[0]!r}")
    if isinstance(cf.crystal_class, str):
        if cf.crystal_class not in names:
            raise UserError(f"{path}: field 'crystal_class': no class named {cf.crystal_class!r}")
        crystal = names.index(cf.crystal_class)
    else:
        if cf.crystal_class not in ids:
            raise UserError(
                f"{path}: field 'crystal_class': {cf.crystal_class} is not a class id {ids}")
        crystal = ids.index(cf.crystal_class)
    palette = cf.palette or {}
    unknown = sorted(set(palette) - set(names))
    if unknown:
        raise UserError(f"{path}: field 'palette': {unknown[0]!r} is not a class name")
    if palette:
        missing = [n for n in names if n not in palette]
        if missing:
            raise UserError(f"{path}: field 'palette': no colour for class {missing[0]!r}")
        colours = [tuple(palette[n]) for n in names]
        if len(set(colours)) != len(colours):
            raise UserError(f"{path}: field 'palette': two classes share one colour")
    specs = tuple(
        ClassSpec(index=i, name=c.name, value=c.id,
                  color=tuple(int(v) for v in palette[c.name]) if palette else None)
        for i, c in enumerate(cf.classes))
    return cf, specs, crystal


def write_classes(path: str | Path, names: Iterable[str], *, crystal_class: int | str = 2,
                  px_size_um: float | None = None, ids: Iterable[int] | None = None,
                  palette: dict[str, tuple[int, int, int]] | None = None,
                  description: str = "") -> Path:
    """Write a ``classes.json`` (ids default to 0..K-1)."""
    names = list(names)
    ids = list(ids) if ids is not None else list(range(len(names)))
    doc: dict[str, Any] = {
        "classes": [{"id": int(i), "name": n} for i, n in zip(ids, names, strict=True)],
        "crystal_class": crystal_class,
    }
    if px_size_um is not None:
        doc["px_size_um"] = float(px_size_um)
    if palette:
        doc["palette"] = {k: [int(c) for c in v] for k, v in palette.items()}
    if description:
        doc["description"] = description
    path = Path(path)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
