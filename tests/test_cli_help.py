"""`medexport --help` lists every command once, the clinic commands apart from the build commands."""
from __future__ import annotations

import subprocess
import sys

from medexport.export.cli import BUILD_COMMANDS, CLINIC_COMMANDS, COMMANDS


def test_help_lists_clinic_commands_apart_from_build_commands():
    run = subprocess.run([sys.executable, "-m", "medexport.export.cli", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    clinic, _, building = run.stdout.partition("build commands")
    assert "clinic commands" in clinic and building
    rows = [(line.split()[0], part) for part, text in (("clinic", clinic.split("clinic commands")[1]),
                                                       ("build", building))
            for line in text.splitlines()[1:] if line.startswith("  ") and not line.startswith("   ")]
    listed = dict(rows)
    assert sorted(name for name, _ in rows) == sorted(COMMANDS)  # each once, none lost
    assert {n for n, part in listed.items() if part == "clinic"} == set(CLINIC_COMMANDS)
    assert {n for n, part in listed.items() if part == "build"} == set(BUILD_COMMANDS)
    assert "predict        run studies through a bundle" in clinic


def test_the_engine_holds_no_benchmark():
    """The Triton load test is a client: it lives in export/bench, not in the engine the clinic app freezes."""
    from pathlib import Path

    import medexport.engine
    import medexport.export.bench.loadtest as loadtest

    assert not list(Path(medexport.engine.__file__).parent.rglob("loadtest.py"))
    assert callable(loadtest.free_ports) and len(set(loadtest.free_ports(3))) == 3
