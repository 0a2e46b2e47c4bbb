"""DICOM I/O, like pydicom's ``pixels/``: the header (read, checked, described), the pixels (decoded
in full with the fastest plugin, or at reduced resolution), the display chain (Modality LUT, VOI,
MONOCHROME1), the waveform (a lean read of an ECG's elements) and the one transfer-syntax table.
Imports nothing of the engine above it (an import-linter contract in pyproject.toml)."""
from .display import check_modality_lut, minmax, to_display, window
from .header import (GREYSCALE, PARSE_ERRORS, check_header, describe, load_pixel_data, parse_errors, pixel_bytes,
                     pixel_spacing_mm, read_dataset, single_frame)
from .pixels import (Reduction, decode_pixels, full_resolution, margin, preferred_plugin, reduce_decoded,
                     reduced_frame, reduced_resolution)
from .waveform import FIX_DICOM, NotLean, check_waveform_group, lean_waveform, waveform_values

__all__ = ["GREYSCALE", "PARSE_ERRORS", "FIX_DICOM", "NotLean", "Reduction", "check_header", "check_modality_lut",
           "check_waveform_group", "decode_pixels", "describe", "full_resolution", "lean_waveform", "load_pixel_data",
           "margin", "minmax", "parse_errors", "pixel_bytes", "pixel_spacing_mm", "preferred_plugin", "read_dataset",
           "reduce_decoded", "reduced_frame", "reduced_resolution", "single_frame", "to_display", "waveform_values",
           "window"]
