"""A page of a listing: its items and how many there are in all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Page:
    items: list[Any]
    total: int
