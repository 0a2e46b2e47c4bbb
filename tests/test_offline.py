"""Running a bundle writes nothing outside the places the app owns and sends nothing."""
import os
import subprocess
import sys


def test_onnxruntime_leaves_no_device_id_or_event_queue(tmp_path, ecg_bundle, shared):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")}
    env["HOME"] = str(home)
    record = shared / "ecg" / "cinc2017-af" / "A00004.hea"
    code = ("from medexport.engine import open_bundle\n"
            f"with open_bundle({str(ecg_bundle)!r}, backend='onnxruntime') as m:\n"
            f"    print(m.predict({str(record)!r}).label)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    assert not (home / ".cache" / "Microsoft").exists()
    assert [p for p in home.rglob("*") if p.is_file()] == []
