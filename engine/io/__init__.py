"""Readers that turn files on disk into plain numpy records (no torch, no Qt)."""
from .image import ImageStudy, read_image

__all__ = ["ImageStudy", "read_image"]
