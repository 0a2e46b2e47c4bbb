"""Running a bundle writes nothing outside the places the app owns and sends nothing."""
import os
import shutil
import subprocess
import sys

import pytest

# installed in the child before anything else: logs every name lookup and every non-local
# connection, in the child and in any child it forks (fork keeps audit hooks)
GUARD = """
import os, sys
def _net(event, args):
    if event.startswith("socket.geth") or event == "socket.getaddrinfo" or (
            event == "socket.connect" and not isinstance(args[1], (str, bytes))):
        with open(os.environ["NET_LOG"], "a") as fh:
            fh.write(f"pid {os.getpid()}: {event} {args[1:] if event == 'socket.connect' else args}\\n")
sys.addaudithook(_net)
"""


def _strace() -> list[str]:
    """strace -f (every thread and child process) where it exists and may trace; else nothing."""
    exe = shutil.which("strace")
    if exe and subprocess.run([exe, "-qq", "-e", "trace=none", "true"], capture_output=True).returncode == 0:
        return [exe, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg"]
    return []


def _run_offline(tmp_path, code: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``code`` with a fresh home, the app's folders inside it, and the network watched."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    for d in (home, cwd, home / "tmp"):
        d.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XDG_") and k not in ("ORT_DISABLE_TELEMETRY", "MEDEXPORT_CACHE", "MEDEXPORT_HOME")}
    env.update(HOME=str(home), TMPDIR=str(home / "tmp"), MEDEXPORT_HOME=str(home / "data"),
               MEDEXPORT_CACHE=str(home / "cache"), NET_LOG=str(tmp_path / "net.log"))
    trace = tmp_path / "strace.log"
    strace = [*_strace(), "-o", str(trace)] if _strace() else []
    proc = subprocess.run([*strace, sys.executable, "-c", GUARD + code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    lines = trace.read_text().splitlines() if trace.is_file() else []
    found = {
        "network (audit hook)": (tmp_path / "net.log").read_text().splitlines() if (tmp_path / "net.log").exists() else [],
        "network (strace -f)": [ln for ln in lines if "AF_INET" in ln or "AF_NETLINK" in ln],
        "files outside the app's folders": sorted(
            str(p.relative_to(home)) for p in home.rglob("*")
            if p.is_file() and not {home / "data", home / "cache"} & set(p.parents)),
        "files in the working directory": sorted(str(p) for p in cwd.rglob("*")),
    }
    return proc, found


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_opening_and_running_a_bundle_sends_nothing_and_writes_only_its_own_folders(tmp_path, pneumonia_bundle,
                                                                                   backend, cxr):
    before = sorted(p for p in pneumonia_bundle.rglob("*"))
    code = ("from medexport.engine import open_bundle\n"
            f"with open_bundle({str(pneumonia_bundle)!r}, backend={backend!r}) as m:\n"
            f"    print(m.backend, m.predict({cxr[0]!r}).scores)\n")
    proc, found = _run_offline(tmp_path, code)
    assert proc.returncode == 0 and proc.stdout.startswith(backend), proc.stderr[-3000:]
    assert found == {k: [] for k in found}
    assert sorted(p for p in pneumonia_bundle.rglob("*")) == before


def test_the_guard_sees_a_lookup_from_a_forked_child(tmp_path):
    """The check above can fail: a name lookup in a forked child is caught."""
    code = ("import multiprocessing, socket\n"
            "def look():\n"
            "    try: socket.getaddrinfo('example.invalid', 443)\n"
            "    except OSError: pass\n"
            "p = multiprocessing.get_context('fork').Process(target=look); p.start(); p.join()\n")
    proc, found = _run_offline(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert found["network (audit hook)"] and "example.invalid" in found["network (audit hook)"][0]


def test_onnxruntime_leaves_no_device_id_or_event_queue(tmp_path, ecg_bundle, shared):
    record = shared / "ecg" / "cinc2017-af" / "A00004.hea"
    code = ("from medexport.engine import open_bundle\n"
            f"with open_bundle({str(ecg_bundle)!r}, backend='onnxruntime') as m:\n"
            f"    print(m.predict({str(record)!r}).label)\n")
    proc, found = _run_offline(tmp_path, code)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    assert not (tmp_path / "home" / ".cache" / "Microsoft").exists()
    assert found["files outside the app's folders"] == []
