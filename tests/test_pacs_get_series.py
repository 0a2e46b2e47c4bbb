"""``medexport pacs get --series`` against a real PACS (Orthanc): one whole series of a study that
holds two, by C-GET at SERIES level and by WADO-RS, one file per instance, all or none."""
from __future__ import annotations

import subprocess
import sys

import pydicom
import pytest
from pacs_fixtures import orthanc  # noqa: F401 (session fixture)
from test_listener_series import mr_series

from medexport.engine.pacs import PacsError, scu


@pytest.fixture(scope="module")
def stored_study(orthanc, shared):  # noqa: F811
    """Two real MR series (35 and 32 crops) put in one study of a test patient, stored in Orthanc."""
    first, second = mr_series(shared, "GETSERIES1"), mr_series(shared, "GETSERIES1",
                                                               "volumes/hippocampus-mr/dicom/Study1/13_HCropVolume")
    for ds in second:
        ds.StudyInstanceUID = first[0].StudyInstanceUID
    assert len(scu.send(orthanc.node(), first + second)) == 35 + 32
    return first, second


def uids(paths) -> set:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def test_pacs_get_series_retrieves_every_instance_of_that_series_only(orthanc, stored_study, tmp_path):  # noqa: F811
    first, second = stored_study
    series = first[0].SeriesInstanceUID
    out = tmp_path / "series"
    run = subprocess.run([sys.executable, "-m", "medexport.export.cli", "pacs", "get", "--node", orthanc.address,
                          "--series", series, "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"35 instances of series {series}" in run.stdout
    files = sorted(out.iterdir())
    assert len(files) == 35 and uids(files) == {str(d.SOPInstanceUID) for d in first}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    # the retrieved folder is the series a volume bundle reads
    from medexport.engine import read_volume

    assert read_volume(out).shape == (35, 48, 36)

    # DICOMweb (WADO-RS), with the study given; into an existing folder
    web = tmp_path / "web"
    web.mkdir()
    got = scu.get_series(orthanc.web_node(), second[0].SeriesInstanceUID, web, study_uid=first[0].StudyInstanceUID)
    assert len(got) == 32 and uids(got) == {str(d.SOPInstanceUID) for d in second}
    assert sorted(web.iterdir()) == sorted(got)


def test_an_unknown_series_leaves_nothing_behind(orthanc, stored_study, tmp_path):  # noqa: F811
    out = tmp_path / "nothing"
    with pytest.raises(PacsError, match="knows no instance of series 1.2.3.4"):
        scu.get_series(orthanc.node(), "1.2.3.4", out)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a staging folder
    run = subprocess.run([sys.executable, "-m", "medexport.export.cli", "pacs", "get", "--node", orthanc.address,
                          "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "needs --study or --series" in run.stderr
