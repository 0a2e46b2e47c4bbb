# PyInstaller runtime hook (installer/medexport_viewer.spec): package data that installer/build.py
# stored gzip-compressed (highdicom's DICOM standard tables: 16 MB of JSON, 0.6 MB packed) is
# served by pkgutil.get_data as the original bytes, so the library reads it unchanged.
import gzip
import pkgutil

_get_data = pkgutil.get_data


def _get_packed_data(package, resource):
    try:
        return _get_data(package, resource)
    except FileNotFoundError:
        packed = _get_data(package, resource + ".gz")  # the build removed the original only beside this
        return None if packed is None else gzip.decompress(packed)


pkgutil.get_data = _get_packed_data
