"""The DICOM network side: PACS nodes, query/retrieve/send, the listener and its durable job queue.

Qt-free and torch-free. ``nodes`` (the settings file shared with the viewer), ``scu`` (C-ECHO,
C-FIND, C-GET, C-STORE with pynetdicom; DICOMweb nodes through ``dicomweb``), ``objects`` (the
SR / SEG / Encapsulated PDF a result becomes, with UIDs derived from the source and the bundle),
``queue`` (jobs as files renamed between folders), ``listener`` (the C-STORE SCP that runs models).
pynetdicom and dicomweb-client are imported lazily: ``pip install 'medexport[pacs]'``.
"""
from __future__ import annotations

from medexport.engine.errors import MedError


class PacsError(MedError):
    """A PACS node could not be reached, refused a request, or answered with a failure status."""
