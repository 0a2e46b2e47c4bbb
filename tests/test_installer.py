"""The frozen Linux app: built from the runtime and desktop extras only, self-tested headless.

Slow (a separate venv and PyInstaller): runs in CI (CI=true) or with MEDEXPORT_TEST_INSTALLER=1.
"""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("MEDEXPORT_TEST_INSTALLER")),
                                reason="builds the installer; set MEDEXPORT_TEST_INSTALLER=1 (CI does)")


def test_make_installer_builds_a_self_testing_app():
    env = dict(os.environ, HOME=os.environ.get("MEDEXPORT_TEST_REAL_HOME") or os.environ["HOME"])  # build caches
    proc = subprocess.run(["make", "installer"], cwd=REPO, capture_output=True, text=True, timeout=3000, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    app = REPO / "dist" / "medexport-viewer"
    assert (app / "medexport-viewer").is_file() and (app / "medexport-viewer.desktop").is_file()
    assert (REPO / "dist" / "medexport-viewer-linux-x86_64.tar.gz").is_file()
    assert log.count("PASS ") >= 3 and "FAIL" not in log  # one verdict per shipped bundle
    assert "PASS hippocampus-mr" in log  # the volume model ships too (issue 29)
    internal = app / "_internal"
    for absent in ("torch", "medexport/export", "scipy", "pandas", "wfdb"):
        assert not (internal / absent).exists(), absent
    # highdicom's tables packed (the self-test's SR and SEG read them through the runtime hook)
    assert (internal / "highdicom" / "_standard" / "module_attribute_map.json.gz").is_file()
    assert not list((internal / "highdicom").rglob("*.json"))
    size = sum(f.lstat().st_size for f in app.rglob("*") if f.is_file() and not f.is_symlink())
    assert size <= 350e6, f"{size / 1e6:.0f} MB is over the 350 MB budget"
    assert (REPO / "dist" / "frozen-viewer.png").is_file()
