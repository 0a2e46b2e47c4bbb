"""NIfTI-1 / NIfTI-2 volumes (``.nii``, ``.nii.gz``) through nibabel, as a VolumeStudy.

The voxels keep nibabel's array shape and axis order; nibabel's affine (RAS+, from the sform,
else the qform) becomes the engine's LPS affine. The header's shape, data type and orientation
codes are checked before any voxel is read.
"""
from __future__ import annotations

import contextlib
import math
import os
import zlib

import numpy as np

from .. import limits
from ..checksums import sha256_file
from ..errors import InvalidInputError
from ..volume import VolumeStudy, frozen
from .dicom import PARSE_ERRORS

SUFFIXES = (".nii", ".nii.gz")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
FIX = "check that the file was copied completely, or re-export it (e.g. with dcm2niix)"


def is_nifti(path: str) -> bool:
    return path.lower().endswith(SUFFIXES)


@contextlib.contextmanager
def nifti_errors(path: str):
    """nibabel's, gzip's and numpy's refusals of a malformed file as InvalidInputError."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError
    from nibabel.wrapstruct import WrapStructError

    try:
        yield
    except (ImageFileError, HeaderDataError, WrapStructError, zlib.error, MemoryError, *PARSE_ERRORS) as exc:
        raise InvalidInputError(f"{path} could not be read as NIfTI ({type(exc).__name__}: {exc})",
                                expected="a complete NIfTI-1 or NIfTI-2 file", fix=FIX) from None


def read_nifti(path: str) -> VolumeStudy:
    """A 3-D NIfTI file as float32 voxels (its scl_slope / scl_inter applied) with its affine in LPS."""
    limits.check_file_size(os.path.getsize(path), path)
    with nifti_errors(path):
        import nibabel

        image = nibabel.load(path)  # the header only: voxels are read below
        if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
            raise InvalidInputError(f"{path} is a {type(image).__name__}", expected="a NIfTI-1 or NIfTI-2 image",
                                    fix="convert it to NIfTI")
        header, shape, dtype = image.header, image.shape, image.get_data_dtype()
        if len(shape) != 3 or min(shape) < 1:
            raise InvalidInputError(f"{path} has shape {shape} (NIfTI dim)", expected="one 3-D volume",
                                    fix="save one 3-D volume per file (e.g. one time point)")
        if dtype.kind not in "biuf" or dtype.fields:
            raise InvalidInputError(f"{path} holds {dtype} voxels (NIfTI datatype)",
                                    expected="integer or real greyscale voxels", fix="save the greyscale volume")
        limits.check_volume(shape, math.prod(shape) * dtype.itemsize, path)
        if header.get_sform(coded=True)[1] == 0 and header.get_qform(coded=True)[1] == 0:
            raise InvalidInputError(f"{path} has sform_code 0 and qform_code 0 (no orientation)",
                                    expected="an sform or qform giving the voxel-to-world affine",
                                    fix="convert the source with a tool that writes the orientation (e.g. dcm2niix)")
        affine = RAS_TO_LPS @ np.asarray(image.affine, np.float64)
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise InvalidInputError(f"{path} has the affine {affine[:3].tolist()} (sform / qform)",
                                    expected="a finite, invertible voxel-to-world affine", fix=FIX)
        voxels = _scaled(image.dataobj, path)
    if voxels.shape != shape:
        raise InvalidInputError(f"{path}: the voxels read have shape {voxels.shape}",
                                expected=f"{shape} from the header", fix=FIX)
    if not np.isfinite(voxels).all():
        raise InvalidInputError(f"{path} holds NaN or infinite voxels (or scl_slope / scl_inter make them so)",
                                expected="finite voxel values", fix=FIX)
    meta = {"description": header["descrip"].item().decode("latin-1", "replace").strip("\x00 ")}
    return VolumeStudy(frozen(voxels), frozen(affine), spacing, path, "nifti", sha256_file(path),
                       files=(path,), meta={k: v for k, v in meta.items() if v})


def _scaled(proxy, path: str) -> np.ndarray:
    """The stored voxels as float32 with scl_slope / scl_inter applied in place: one float32 copy beside
    the stored array (nibabel's get_fdata scales in float64 first: 400 instead of 200 MiB for the chest CT)."""
    slope, inter = float(proxy.slope), float(proxy.inter)  # nibabel gives 1 and 0 when unset
    if not (math.isfinite(slope) and math.isfinite(inter)) or slope == 0:
        raise InvalidInputError(f"{path} has scl_slope {slope} and scl_inter {inter}",
                                expected="a finite, non-zero slope and a finite intercept", fix=FIX)
    voxels = np.asarray(proxy.get_unscaled()).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if slope != 1:
            voxels *= np.float32(slope)
        if inter != 0:
            voxels += np.float32(inter)
    return voxels
