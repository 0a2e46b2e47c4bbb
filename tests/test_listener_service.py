"""The listener as a service a clinic's IT person runs: SIGHUP reloads the bundles, --log-file, a
failed job queued again by hand (requeue / retry, attempts reset), `listen status`, `pacs remove`."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

from pacs_fixtures import free_port, orthanc  # noqa: F401 (session fixture)
from test_listener import Listen, ecg_template, results_in_orthanc, studies  # noqa: F401 (fixture)
from waiting import wait_for


def medexport(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medexport.export.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_sighup_reloads_the_bundles_and_the_log_file_gets_every_line(ecg_bundle, fetal_bundle, tmp_path):
    folder = tmp_path / "bundles"
    folder.mkdir()
    shutil.copytree(ecg_bundle, folder / "ecg-rhythm")
    log = tmp_path / "listen.log"
    listen = Listen(tmp_path / "spool", folder, f"NOBODY@127.0.0.1:{free_port()}", "--log-file", log)
    try:
        events = lambda: [e for e in listen.audit() if e["event"] in ("reloaded", "reload-failed")]  # noqa: E731
        shutil.copytree(fetal_bundle, folder / "fetal-head-us")
        listen.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: events()), "no reload after SIGHUP"
        assert events()[-1]["event"] == "reloaded"
        assert sorted(events()[-1]["bundles"]) == ["ecg-rhythm", "fetal-head-us"]
        # a damaged bundle (a byte added to its golden studies): the reload is refused, the running set stays
        with open(folder / "fetal-head-us" / "golden.npz", "ab") as fh:
            fh.write(b"\0")
        listen.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: events()[-1]["event"] == "reload-failed")
        assert sorted(events()[-1]["bundles"]) == ["ecg-rhythm", "fetal-head-us"] and listen.proc.poll() is None
    finally:
        listen.stop()
    logged = log.read_text()
    assert "started" in logged and "reloaded" in logged and "reload-failed" in logged and "stopped" in logged


def test_a_failed_job_is_requeued_by_hand_and_delivered(orthanc, ecg_bundle, ecg_template, tmp_path):  # noqa: F811
    from medexport.engine.pacs import scu

    spool = tmp_path / "spool"
    listen = Listen(spool, ecg_bundle, f"NOBODY@127.0.0.1:{free_port()}", "--send-deadline", "0.0003",
                    "--backoff", "0.2", "--max-backoff", "0.5")
    try:
        [ds] = studies(ecg_template, 1, "REQUEUE1")
        scu.send(listen.node(), [ds])
        assert wait_for(lambda: listen.count("failed") == 1), "the job did not fail after its deadline"
    finally:
        listen.stop()
    status = json.loads(medexport("listen", "status", "--spool", spool, "--json").stdout)
    assert status["queue"]["failed"] == 1 and status["last_errors"][0]["state"] == "failed"
    [job] = [p.stem for p in (spool / "failed").glob("*.json")]
    assert medexport("listen", "retry", "nosuchjob", "--spool", spool).returncode == 2
    again = medexport("listen", "requeue", "--failed", "--spool", spool)
    assert again.returncode == 0 and "1 failed jobs queued again" in again.stdout
    data = json.loads((spool / "pending" / f"{job}.json").read_text())
    assert data["attempts"] == 0 and data["not_before"] == 0
    listen = Listen(spool, ecg_bundle, orthanc.address)  # the PACS is reachable now: delivered once
    try:
        assert wait_for(lambda: listen.count("done") == 1)
    finally:
        listen.stop()
    assert results_in_orthanc(orthanc, "REQUEUE1")["SR"] == 1


def test_pacs_remove_takes_a_node_out_of_the_settings(tmp_path):
    import os

    env = os.environ | {"MEDEXPORT_HOME": str(tmp_path)}
    assert medexport("pacs", "add", "old", "PACS@127.0.0.1:104", env=env).returncode == 0
    assert medexport("pacs", "add", "new", "PACS2@127.0.0.1:105", env=env).returncode == 0
    gone = medexport("pacs", "remove", "old", env=env)
    assert gone.returncode == 0 and "removed old" in gone.stdout
    listed = medexport("pacs", "nodes", env=env).stdout
    assert "PACS2" in listed and "old" not in listed
    missing = medexport("pacs", "remove", "old", env=env)
    assert missing.returncode == 2 and "no node named 'old'" in missing.stderr and "Traceback" not in missing.stderr
