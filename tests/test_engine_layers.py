"""Inside the engine nothing imports upward: reading a bundle and the tasks below screening and
the self-test loop, below the runners (Model, RemoteModel), below ``open`` (the import-linter
contract in pyproject.toml); screening reads a model only through its narrow interface."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_engine_contract_catches_an_upward_import(tmp_path):
    """A copy of the project in which the bundle reader imports the model and a task imports the
    opener breaks the engine's layers contract, naming both imports."""
    for layer in ("engine", "export", "models", "desktop"):
        shutil.copytree(REPO / layer, tmp_path / "medexport" / layer, ignore=shutil.ignore_patterns("*.pt", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    engine = tmp_path / "medexport" / "engine"
    with open(engine / "bundle_read.py", "a") as fh:
        fh.write("\nfrom .model import Model  # noqa\n")
    with open(engine / "tasks" / "segmentation.py", "a") as fh:
        fh.write("\nfrom ..open import open_bundle  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(lint)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    out = proc.stdout.replace("\n", " ")
    assert proc.returncode != 0 and "Inside the engine" in out, proc.stdout
    assert "medexport.engine.bundle_read -> medexport.engine.model" in out
    assert "medexport.engine.tasks.segmentation -> medexport.engine.open" in out


def test_screening_reads_no_private_attribute():
    """screening.py touches no ``_name`` of another object (a model's ``_run`` was one): it reads a
    ``Screen`` and calls a ``Rung``'s public ``run`` / ``answer`` / ``float_model``."""
    tree = ast.parse((REPO / "engine" / "screening.py").read_text())
    private = [f"line {n.lineno}: .{n.attr}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert private == []


def test_model_provides_the_rung_interface():
    """Model answers what the ladder asks of a rung (screening.Rung); the ladder's behaviour is
    tests/test_ladder.py."""
    from medexport.engine.model import Model
    from medexport.engine.screening import Rung

    asked = {name for name in vars(Rung) if not name.startswith("_")} | set(Rung.__annotations__)
    assert asked == {"screen", "provenance", "run", "answer", "float_model"}
    assert all(callable(getattr(Model, name)) for name in ("run", "answer", "float_model"))
