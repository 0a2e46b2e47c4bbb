"""One exception hierarchy for everything medexport refuses.

Every message says what was found, what was expected and how to fix it. The CLI and
the viewer show a :class:`MedError` as its message alone, without a traceback.
"""
from __future__ import annotations


class MedError(Exception):
    """Base class of every error medexport raises on purpose."""

    def __init__(self, what: str, *, expected: str | None = None, fix: str | None = None):
        self.what, self.expected, self.fix = what, expected, fix
        parts = [what.rstrip(".") + "."]
        if expected:
            parts.append(f"Expected {expected.rstrip('.')}.")
        if fix:
            parts.append(f"Fix: {fix.rstrip('.')}.")
        super().__init__(" ".join(parts))


class InvalidInputError(MedError):
    """An input study or record cannot be used (unreadable, wrong kind, bad tags)."""


class BundleError(MedError):
    """A bundle is missing, malformed, tampered with or of an unknown schema."""


class BackendUnavailableError(MedError):
    """A runtime (OpenVINO, ONNX Runtime, TensorRT) is not installed or cannot run here."""


class ConfigurationError(MedError):
    """Options that conflict, do not apply, or name something unknown."""


class ExportError(MedError):
    """A model could not be exported, quantized or compiled."""


class ValidationError(MedError):
    """A compiled model disagrees with its source beyond the stated tolerance."""

    def __init__(self, what: str, *, report: dict | None = None, **kw):
        super().__init__(what, **kw)
        self.report = report or {}


def suggest(name: str, choices) -> str:
    """Return ' Did you mean X?' for a near miss among choices, else ''."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
