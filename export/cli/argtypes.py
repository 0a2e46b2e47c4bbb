"""Argument types the command modules share: comma-separated lists."""
from __future__ import annotations


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def name_list(text: str) -> list[str]:
    """Comma-separated target or precision names; case does not matter (INT8 is int8)."""
    return [t.lower() for t in csv_list(text)]
