"""Report -> image properties, with Glance/Nova names where they exist (string values only)."""

from __future__ import annotations

from pydantic import BaseModel


def properties_of(format_name: str, details: BaseModel, virtual_size: int | None) -> dict[str, str]:
    """Only what the image states: a property is never written from a guess or a default."""
    return {"disk_format": format_name}
