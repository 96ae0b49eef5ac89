"""Inventory files as an artefact: read one with a clear error, and say what loading it changes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from continuity.errors import ValidationFailed
from continuity.models import Inventory

# Each section of an inventory and the field that names its entries.
SECTIONS = {
    "areas": "id",
    "devices": "name",
    "circuits": "id",
    "duty_officers": "id",
    "operators": "id",
}


@dataclass(frozen=True)
class InventoryFile:
    path: Path
    inventory: Inventory
    sha256: str  # of the file's bytes, as recorded with each load


def read_inventory(path: Path) -> InventoryFile:
    """The file as an inventory, or ValidationFailed with one line per problem."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValidationFailed(f"{path}: cannot read it: {e.strerror}") from None
    try:
        inv = Inventory.model_validate_json(data)
    except ValidationError as e:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
        raise ValidationFailed(
            f"{path} is not a valid inventory; nothing was loaded:\n{problems}"
        ) from None
    return InventoryFile(path=path, inventory=inv, sha256=hashlib.sha256(data).hexdigest())


@dataclass
class SectionDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class InventoryDiff:
    sections: dict[str, SectionDiff]
    province: tuple[str, str] | None  # (before, after) when it changes

    def __bool__(self) -> bool:
        return self.province is not None or any(self.sections.values())

    def empties(self, before: Inventory) -> list[str]:
        """Sections that have entries now and would have none: a load that wipes them."""
        return [
            name
            for name, diff in self.sections.items()
            if getattr(before, name) and len(diff.removed) == len(getattr(before, name))
        ]

    def lines(self) -> list[str]:
        if not self:
            return ["no change"]
        out = []
        if self.province is not None:
            out.append(f"province: {self.province[0]!r} -> {self.province[1]!r}")
        for name, diff in self.sections.items():
            for verb, ids in (("+", diff.added), ("-", diff.removed), ("~", diff.changed)):
                out.extend(f"{verb} {name[:-1].replace('_', ' ')} {i}" for i in ids)
        return out

    def summary(self) -> str:
        parts = [
            f"{name.replace('_', ' ')} +{len(d.added)} -{len(d.removed)} ~{len(d.changed)}"
            for name, d in self.sections.items()
            if d
        ]
        if self.province is not None:
            parts.insert(0, "province changed")
        return "; ".join(parts) or "no change"


def diff_inventories(before: Inventory, after: Inventory) -> InventoryDiff:
    sections = {}
    for name, key in SECTIONS.items():
        old = {getattr(e, key): e for e in getattr(before, name)}
        new = {getattr(e, key): e for e in getattr(after, name)}
        sections[name] = SectionDiff(
            added=sorted(new.keys() - old.keys()),
            removed=sorted(old.keys() - new.keys()),
            changed=sorted(k for k in old.keys() & new.keys() if _dump(old[k]) != _dump(new[k])),
        )
    province = None if before.province == after.province else (before.province, after.province)
    return InventoryDiff(sections=sections, province=province)


def _dump(entry: BaseModel) -> object:
    return entry.model_dump(mode="json")


__all__ = ["SECTIONS", "InventoryDiff", "InventoryFile", "diff_inventories", "read_inventory"]
