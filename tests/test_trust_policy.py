"""One trust policy (engine/trust_policy.py): a present signature is always checked, and the CLI,
the viewer and the services make the same decision on the same bundle (issue 24 item 7, issue 25)."""
import base64
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medexport.engine import BundleError, open_bundle, read_manifest
from medexport.engine.signing import generate_key_pair, sign_bundle

REPO = Path(__file__).resolve().parents[1]


def medexport(*args, env=None):
    exe = Path(sys.executable).with_name("medexport")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=None if env is None else os.environ | env)


def tampered_copy(signed_bundle: Path, out: Path) -> Path:
    """The hostile trial's bundle: a valid threshold changed in the manifest, bundle.sig kept."""
    shutil.copytree(signed_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    data["postprocess"]["thresholds"]["pneumonia"] = 0.95
    (out / "manifest.json").write_text(json.dumps(data))
    read_manifest(out)  # the manifest lists no checksum of itself: every checksum still matches
    return out


def test_tampered_signed_bundle_is_refused_with_and_without_a_trust_store(signed_bundle, signing_keys, tmp_path,
                                                                          monkeypatch):
    root = tampered_copy(signed_bundle, tmp_path / "pneumonia-cxr")
    monkeypatch.delenv("MEDEXPORT_TRUST", raising=False)
    for options in ({}, {"allow_unsigned": True}, {"trust": [signing_keys[1]]}, {"trust": [signing_keys[2]]},
                    {"trust": [signing_keys[2]], "allow_unsigned": True}):
        with pytest.raises(BundleError, match="does not match the bundle .changed after signing: manifest.json"):
            open_bundle(root, **options)


def test_a_rewritten_statement_under_the_old_signature_is_refused_without_a_trust_store(signed_bundle, tmp_path):
    """The attacker also updates the signed file list (its manifest.json digest): only the ECDSA
    signature can tell, and without a trust store the key is recovered from the signature itself."""
    root = tampered_copy(signed_bundle, tmp_path / "b")
    sig = json.loads((root / "bundle.sig").read_text())
    statement = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    for item in statement["predicate"]["resources"]:
        if item["name"] == "manifest.json":
            item["digest"] = hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()
    sig["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (root / "bundle.sig").write_text(json.dumps(sig))
    with pytest.raises(BundleError, match="does not match its statement or its key id"):
        open_bundle(root)


@pytest.mark.parametrize("curve", ["SECP384R1", "SECP521R1"])
def test_signatures_by_every_accepted_curve_are_checked_without_a_trust_store(pneumonia_bundle, tmp_path, curve):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(getattr(ec, curve)())
    pem = tmp_path / "k.key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    root = tmp_path / "b"
    shutil.copytree(pneumonia_bundle, root)
    signed = sign_bundle(root, pem)
    with open_bundle(root, trust=[]) as m:
        assert (m.signature.valid, m.signature.trusted, m.signature.fingerprint) == (True, False, signed.fingerprint)
    (root / "MODEL_CARD.md").write_text("changed")
    with pytest.raises(BundleError):
        open_bundle(root, verify=False, trust=[])


def test_predict_and_verify_refuse_a_tampered_bundle(signed_bundle, signing_keys, tmp_path, cxr):
    root = tampered_copy(signed_bundle, tmp_path / "b")
    no_store = {"MEDEXPORT_TRUST": "", "MEDEXPORT_HOME": str(tmp_path / "home")}
    for extra in ([], ["--trust", signing_keys[1]]):
        proc = medexport("verify", root, *extra, env=no_store)
        assert proc.returncode == 2 and "FAIL" in proc.stdout and "does not match" in proc.stdout, proc.stdout
    proc = medexport("predict", root, cxr[0], env=no_store)
    assert proc.returncode == 2 and "does not match the bundle" in proc.stderr and "pneumonia" not in proc.stdout


def test_sign_then_verify_round_trip_folder_and_zip(pneumonia_bundle, signing_keys, tmp_path):
    private, public, stranger = signing_keys
    folder = tmp_path / "b"
    shutil.copytree(pneumonia_bundle, folder)
    env = {"MEDEXPORT_TRUST": "", "MEDEXPORT_HOME": str(tmp_path / "home")}
    assert medexport("verify", folder, "--trust", public, env=env).returncode == 1  # unsigned
    signed = medexport("sign", folder, "--key", private, env=env)
    assert signed.returncode == 0 and "signed by publisher" in signed.stdout, signed.stderr
    ok = medexport("verify", folder, "--trust", public, env=env)
    assert ok.returncode == 0 and "signer: trusted (publisher)" in ok.stdout, ok.stdout + ok.stderr
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    other, _ = generate_key_pair(tmp_path / "k2", "second")
    again = medexport("sign", folder, "--key", other, env=env)  # re-signing replaces the signature
    assert again.returncode == 0, again.stderr
    assert medexport("verify", folder, "--trust", public, env=env).returncode == 1
    assert medexport("verify", folder, "--trust", tmp_path / "k2" / "second.pub.pem", env=env).returncode == 0

    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(pneumonia_bundle.rglob("*")):
            zf.write(p, p.relative_to(pneumonia_bundle))
    assert medexport("sign", z, "--key", private, env=env).returncode == 0
    assert "bundle.sig" in zipfile.ZipFile(z).namelist()
    assert medexport("verify", z, "--trust", public, env=env).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_sign_refuses_a_bundle_whose_signature_does_not_match(signed_bundle, signing_keys, tmp_path):
    root = tampered_copy(signed_bundle, tmp_path / "b")
    before = (root / "bundle.sig").read_bytes()
    proc = medexport("sign", root, "--key", signing_keys[0])
    assert proc.returncode == 2 and "not re-signed" in proc.stderr
    assert (root / "bundle.sig").read_bytes() == before


# -- one decision in the CLI and the viewer -------------------------------------------------------
def test_cli_and_viewer_make_the_same_decision(pneumonia_bundle, signed_bundle, signing_keys, tmp_path, cxr,
                                               monkeypatch):
    from medexport.desktop.catalog import find_bundles
    from medexport.export import cli
    from medexport.export.demo import DEMO_SIGN_KEY

    folders = {"unsigned": pneumonia_bundle, "clinic": signed_bundle}
    demo = tmp_path / "demo" / "pneumonia-cxr"
    shutil.copytree(pneumonia_bundle, demo)
    sign_bundle(demo, DEMO_SIGN_KEY)
    folders["demo"] = demo
    folders["tampered"] = tampered_copy(signed_bundle, tmp_path / "tampered" / "pneumonia-cxr")

    home = tmp_path / "home"
    (home / "trust").mkdir(parents=True)
    shutil.copy(signing_keys[1], home / "trust")  # the clinic's publisher
    monkeypatch.setenv("MEDEXPORT_HOME", str(home))
    monkeypatch.delenv("MEDEXPORT_TRUST", raising=False)

    def decisions():
        cli_opens = {name: cli.main(["predict", str(path), cxr[0], "--json"]) == 0 for name, path in folders.items()}
        viewer_opens = {name: bool(find_bundles([path.parent])[0]) for name, path in folders.items()}
        return cli_opens, viewer_opens

    cli_opens, viewer_opens = decisions()
    assert cli_opens == viewer_opens == {"unsigned": False, "clinic": True, "demo": False, "tampered": False}
    shutil.copy(REPO / "desktop" / "trust" / "medexport-demo-not-for-clinical-use.pub.pem", home / "trust")
    cli_opens, viewer_opens = decisions()  # the demo publisher is trusted where its key is in the store
    assert cli_opens == viewer_opens == {"unsigned": False, "clinic": True, "demo": True, "tampered": False}


# -- the service's settings file --------------------------------------------------------------------
def _systemd_argv(unit: Path, env_file: Path) -> tuple[list[str], dict]:
    """ExecStart as systemd runs it: ${VAR} is one argument, $VAR splits on spaces (systemd.service(5))."""
    env = {}
    for line in env_file.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    text = unit.read_text().replace("\\\n", " ")
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):]
    argv = []
    for word in shlex.split(exec_start):
        if word.startswith("${") and word.endswith("}"):
            argv.append(env[word[2:-1]])
        elif word.startswith("$"):
            argv += env[word[1:]].split()
        else:
            argv.append(word)
    return argv, env


def test_the_service_reads_its_settings_and_trust_store_from_the_environment_file():
    unit, env_file = REPO / "installer/linux/medexport-listen.service", REPO / "installer/linux/medexport-listen.env"
    assert "EnvironmentFile=/etc/medexport/medexport-listen.env" in unit.read_text().splitlines()
    argv, env = _systemd_argv(unit, env_file)
    assert env["MEDEXPORT_TRUST"] and env["MEDEXPORT_HOME"] == "/var/lib/medexport"
    from medexport.export.cli import parser

    args = parser().parse_args(argv[1:])
    assert (args.command, args.bundles, args.forward) == ("listen", env["MEDEXPORT_BUNDLES"], env["MEDEXPORT_FORWARD"])
    assert args.allow == ["XRAY1", "ECGCART1"] and args.workers == 2 and not args.allow_unsigned
