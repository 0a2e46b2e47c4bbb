"""A bundle reads only its own files, zips are checked before they are unpacked, manifest values
are validated, and signatures say who built a bundle (each test is an attack that once worked)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medexport.engine import BundleError, ConfigurationError, open_bundle, read_manifest
from medexport.engine.manifest import Manifest


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    return out


def edit_manifest(root: Path, change) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def list_file(root: Path, data: dict, rel: str) -> None:
    """What an attacker does after changing a file: recompute its checksum in the manifest."""
    data["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()


def zip_of(root: Path, z: Path, replace: dict | None = None) -> Path:
    replace = replace or {}
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file():
                zf.writestr(rel, replace.pop(rel, None) or p.read_bytes())
        for rel, data in replace.items():
            zf.writestr(rel, data)
    return z


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDEXPORT_CACHE", str(cache))
    return cache


def cache_entries(cache: Path) -> list:
    return sorted(p.name for p in (cache / "bundles").iterdir()) if (cache / "bundles").is_dir() else []


# -- a bundle reads only its own files ----------------------------------------------------------
@pytest.mark.parametrize("path", ["../secret.txt", "/etc/hostname"])
def test_manifest_path_outside_the_bundle_is_refused(pneumonia_bundle, tmp_path, path):
    root = copy_of(pneumonia_bundle, tmp_path)
    secret = Path(path) if path.startswith("/") else tmp_path / "secret.txt"
    if not secret.exists():
        secret.write_text("not part of the bundle")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()

    def point_card_outside(data):
        data["files"][path] = digest
        data["card"] = path
    edit_manifest(root, point_card_outside)
    with pytest.raises(BundleError, match=r"files\[.*\] is .*Expected a relative path inside the bundle"):
        read_manifest(root)


def test_symlink_out_of_the_bundle_is_refused(pneumonia_bundle, tmp_path):
    root = copy_of(pneumonia_bundle, tmp_path)
    outside = tmp_path / "outside.md"
    shutil.move(root / "MODEL_CARD.md", outside)  # same bytes, same checksum: only the link is wrong
    (root / "MODEL_CARD.md").symlink_to(outside)
    with pytest.raises(BundleError, match="MODEL_CARD.md is a symbolic link"):
        read_manifest(root)
    (root / "MODEL_CARD.md").unlink()
    shutil.move(outside, root / "MODEL_CARD.md")
    shutil.move(root / "reports", tmp_path / "reports")
    (root / "reports").symlink_to(tmp_path / "reports", target_is_directory=True)
    with pytest.raises(BundleError, match="reports is a symbolic link"):
        read_manifest(root)


def test_unlisted_extra_file_is_refused(pneumonia_bundle, tmp_path):
    root = copy_of(pneumonia_bundle, tmp_path)
    (root / "openvino-fp32" / "plugin.so").write_bytes(b"\x7fELF")
    with pytest.raises(BundleError, match=r"1 file\(s\) not listed in the manifest: \['openvino-fp32/plugin.so'\]"):
        read_manifest(root)
    with pytest.raises(BundleError, match="not listed"):
        read_manifest(root, verify=False)


def test_zip_with_an_unlisted_big_member_is_refused_before_unpacking(pneumonia_bundle, tmp_path, empty_cache):
    z = zip_of(pneumonia_bundle, tmp_path / "b.zip", {"padding.bin": bytes(256 << 20)})
    bundle_bytes = sum(f.stat().st_size for f in pneumonia_bundle.rglob("*") if f.is_file())
    assert z.stat().st_size < bundle_bytes + 1e6  # 256 MiB of zeros deflate to ~250 kB: a small download
    with pytest.raises(BundleError, match="member 'padding.bin' is not listed in the manifest"):
        open_bundle(z)
    assert cache_entries(empty_cache) == []  # nothing unpacked, no .tmp folder left


def test_zip_bomb_in_a_listed_member_is_refused(pneumonia_bundle, tmp_path, empty_cache):
    z = zip_of(pneumonia_bundle, tmp_path / "b.zip", {"golden.npz": bytes(64 << 20)})
    with pytest.raises(BundleError, match="member 'golden.npz' unpacks to 67108864 bytes.*compression ratio below"):
        open_bundle(z)
    assert cache_entries(empty_cache) == []


def test_zip_member_tampered_stops_unpacking_and_leaves_nothing(pneumonia_bundle, tmp_path, empty_cache):
    card = (pneumonia_bundle / "MODEL_CARD.md").read_bytes().replace(b"Not a medical device", b"A medical device")
    z = zip_of(pneumonia_bundle, tmp_path / "b.zip", {"MODEL_CARD.md": card})
    for _ in range(2):  # a failed open never leaves a temporary folder behind
        with pytest.raises(BundleError, match="MODEL_CARD.md has SHA-256 .* the manifest says"):
            open_bundle(z)
    assert cache_entries(empty_cache) == []
    stale = empty_cache / "bundles" / "0123456789abcdef.tmp12345"  # an old version's, or a killed process's
    stale.mkdir()
    os.utime(stale, (0, 0))
    with pytest.raises(BundleError):
        open_bundle(z)
    assert cache_entries(empty_cache) == []


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "openvino-fp32/../../evil.txt"])
def test_zip_member_leaving_the_folder_is_refused(pneumonia_bundle, tmp_path, empty_cache, name):
    z = zip_of(pneumonia_bundle, tmp_path / "b.zip", {name: b"x"})
    with pytest.raises(BundleError, match="zip member|not listed"):
        open_bundle(z)
    assert cache_entries(empty_cache) == [] and not (tmp_path / "evil.txt").exists()


def test_zipped_bundle_in_a_folder_unpacks_once(pneumonia_bundle, tmp_path, empty_cache):
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(pneumonia_bundle.rglob("*")):
            zf.write(p, Path("pneumonia-cxr") / p.relative_to(pneumonia_bundle))
    with open_bundle(z) as m, open_bundle(z) as again:
        assert m.sha256 == again.sha256 == read_manifest(pneumonia_bundle)[1]
    assert len(cache_entries(empty_cache)) == 1 and ".tmp" not in cache_entries(empty_cache)[0]


# -- manifest values ----------------------------------------------------------------------------
def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return change


VALUE_ATTACKS = [
    ("postprocess.thresholds.pneumonia", float("nan"), r"postprocess.thresholds\['pneumonia'\] is nan"),
    ("postprocess.thresholds.pneumonia", 0.0 - 1e-9, r"thresholds\['pneumonia'\] is .*in \[0, 1\]"),
    ("postprocess.thresholds.pneumonia", float("inf"), r"thresholds\['pneumonia'\] is inf"),
    ("postprocess.thresholds", {"pneumonia": 0.1, "covid": 0.5}, "thresholds only on labels"),
    ("preprocess.std", [0.0], r"preprocess.std\[0\] is 0.0.*> 0"),
    ("preprocess.std", [float("nan")], r"preprocess.std\[0\] is nan"),
    ("preprocess.mean", [float("inf")], r"preprocess.mean\[0\] is inf"),
    ("preprocess.size", [0, 28], r"preprocess.size\[0\] is 0.*8..4096"),
    ("preprocess.size", [28, 100000], r"preprocess.size\[1\] is 100000"),
    ("preprocess.channels", 9, "preprocess.channels is 9"),
    ("preprocess.channels", True, "preprocess.channels is True"),
    ("labels", ["normal", "normal"], "labels is .*distinct"),
    ("labels", ["normal", ""], r"labels\[1\] is ''"),
    ("labels", ["normal", 7], r"labels\[1\] is 7"),
    ("artifacts.0.tolerance", -1.0, r"artifacts\[openvino-fp32\].tolerance is -1.0"),
    ("artifacts.0.tolerance", float("nan"), r"tolerance is nan"),
    ("artifacts.0.files.model", "../../model.xml", r"files\['model'\] is '../../model.xml'"),
    ("artifacts.0.report", "/tmp/report.json", r"report is '/tmp/report.json'"),
    ("artifacts.0.precision", "fp8", "precision is 'fp8'"),
    ("golden", "..\\golden.npz", "golden is"),
    ("postprocess.score_output", "probabilities", "score_output is 'probabilities'.*one of the outputs"),
    ("input.shape", [-1, 1, 0, 28], r"image.shape\[2\] is 0"),
    ("medical_device", "yes", "medical_device is 'yes'"),
]


@pytest.mark.parametrize("path, value, message", VALUE_ATTACKS, ids=[f"{a[0]}={a[1]!r}" for a in VALUE_ATTACKS])
def test_manifest_values_are_validated(pneumonia_bundle, path, value, message):
    data = json.loads((pneumonia_bundle / "manifest.json").read_text())
    _set(path, value)(data)
    with pytest.raises(BundleError, match=message):
        Manifest.from_json(json.dumps(data))


def test_tampered_values_with_recomputed_checksums_are_refused_on_open(pneumonia_bundle, tmp_path):
    root = copy_of(pneumonia_bundle, tmp_path)
    edit_manifest(root, _set("preprocess.std", [0]))
    with pytest.raises(BundleError, match=r"preprocess.std\[0\] is 0"):
        open_bundle(root)


@pytest.mark.parametrize("preprocess, message", [
    ({"fs": 0.0}, "preprocess.fs is 0.0"), ({"beats": 0}, "preprocess.beats is 0"),
    ({"band": (40.0, 0.5)}, "preprocess.band"), ({"band": (0.5, 400.0)}, r"preprocess.band\[1\] is 400.0"),
    ({"beat_window": (0.1, 0.4)}, "preprocess.beat_window"), ({"stride": 64}, "preprocess.stride is 64")])
def test_ecg_preprocessing_values_are_validated(preprocess, message):
    from medexport.engine.manifest import EcgPreprocess

    with pytest.raises(BundleError, match=message):
        EcgPreprocess(**preprocess)


def test_tile_values_are_validated():
    from medexport.engine.manifest import TilePreprocess

    with pytest.raises(BundleError, match="preprocess.tile is 4"):
        TilePreprocess(tile=4, overlap=0)
    with pytest.raises(BundleError, match=r"preprocess.std\[0\] is -0.25"):
        TilePreprocess(std=(-0.25,))


def test_manifest_parsing_never_escapes_as_a_raw_exception(pneumonia_bundle, tmp_path):
    with pytest.raises(BundleError, match="nested too deeply"):
        Manifest.from_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="not UTF-8"):
        Manifest.from_json(b'{"schema": "\xff"}')
    with pytest.raises(BundleError, match=r"\['labels'\] appear twice"):
        Manifest.from_json('{"labels": ["a"], "labels": ["b"]}')
    root = copy_of(pneumonia_bundle, tmp_path)
    (root / "manifest.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(BundleError, match="larger than 1048576 bytes"):
        read_manifest(root)
    (root / "manifest.json").write_bytes(b"[" * 100_000)
    with pytest.raises(BundleError):
        read_manifest(root)


# -- signatures ---------------------------------------------------------------------------------
def test_signed_and_trusted_bundle_opens_and_names_its_signer(signed_bundle, signing_keys, cxr):
    _, public, _ = signing_keys
    for trust in ([public], public.parent / "only", str(public)):
        if isinstance(trust, Path):  # a trust-store folder holding the key
            trust.mkdir(exist_ok=True)
            shutil.copy(public, trust)
        with open_bundle(signed_bundle, trust=trust) as m:
            s = m.signature
            assert (s.signed, s.trusted, s.signer) == (True, True, "publisher")
            assert s.fingerprint == hashlib.sha256(public.read_bytes()).hexdigest()
            assert "signed by publisher" in s.describe()
            assert m.predict(cxr[0]).scores


def test_trust_store_from_the_environment(signed_bundle, pneumonia_bundle, signing_keys, monkeypatch):
    monkeypatch.setenv("MEDEXPORT_TRUST", str(signing_keys[1]))
    with open_bundle(signed_bundle) as m:
        assert m.signature.trusted
    with pytest.raises(BundleError, match="is not signed.*allow_unsigned"):
        open_bundle(pneumonia_bundle)
    monkeypatch.setenv("MEDEXPORT_TRUST", str(signing_keys[1].parent / "missing.pub.pem"))
    with pytest.raises(ConfigurationError, match="missing.pub.pem does not exist"):
        open_bundle(signed_bundle)  # a misconfigured trust store never means 'trust nothing is needed'


def test_without_a_trust_store_a_signature_is_checked_not_trusted(signed_bundle, pneumonia_bundle):
    with open_bundle(signed_bundle) as m:
        s = m.signature
        assert (s.signed, s.valid, s.trusted, s.signer) == (True, True, False, None)
        assert s.describe().endswith("signature valid, signer not trusted (no trust store)")
    with open_bundle(pneumonia_bundle) as m:  # plain library use stays as it was
        assert not m.signature.signed and m.signature.describe() == "unsigned"


def test_wrong_key_is_refused_unless_unsigned_is_allowed(signed_bundle, signing_keys):
    _, _, stranger = signing_keys
    with pytest.raises(BundleError, match="signed by key [0-9a-f]{16}, which is not in the trust store"):
        open_bundle(signed_bundle, trust=[stranger])
    with open_bundle(signed_bundle, trust=[stranger], allow_unsigned=True) as m:
        assert m.signature.signed and not m.signature.trusted


def test_unsigned_bundle_is_refused_by_a_trust_store(pneumonia_bundle, signing_keys):
    with pytest.raises(BundleError, match="is not signed.*Expected a bundle signed by a trusted key \\(publisher\\)"):
        open_bundle(pneumonia_bundle, trust=[signing_keys[1]])
    with open_bundle(pneumonia_bundle, trust=[signing_keys[1]], allow_unsigned=True) as m:
        assert not m.signature.signed


@pytest.mark.parametrize("attack", ["threshold", "swapped_labels", "report_with_checksum", "extra_artifact_key"])
def test_tampering_with_recomputed_checksums_is_refused_by_the_signature(signed_bundle, signing_keys, tmp_path, attack):
    """Checksums prove integrity, not origin: every one of these passes the checksums and fails the signature."""
    root = copy_of(signed_bundle, tmp_path)

    def change(data):
        if attack == "threshold":
            data["postprocess"]["thresholds"]["pneumonia"] = 0.9  # a valid value: only the signature can tell
        elif attack == "swapped_labels":
            data["labels"] = data["labels"][::-1]
        elif attack == "report_with_checksum":
            report = root / "reports" / "openvino-fp32.json"
            report.write_text(report.read_text() + " ")
            list_file(root, data, "reports/openvino-fp32.json")
        else:
            data["artifacts"][0]["options"] = {"num_streams": 1}
    edit_manifest(root, change)
    read_manifest(root)  # the checksums all match
    with pytest.raises(BundleError, match="signature by publisher .* does not match the bundle.*changed after signing"):
        open_bundle(root, trust=[signing_keys[1]])
    with pytest.raises(BundleError, match="signature by an unknown key .* does not match.*changed after signing"):
        open_bundle(root)  # no trust store: the signature is still checked (issue 24 item 7)
    with pytest.raises(BundleError, match="does not match"):
        open_bundle(root, trust=[signing_keys[1]], allow_unsigned=True)  # a bad signature is never allowed


def test_added_file_and_damaged_signature_are_refused(signed_bundle, signing_keys, tmp_path):
    root = copy_of(signed_bundle, tmp_path)
    sig = json.loads((root / "bundle.sig").read_text())
    sig["dsseEnvelope"]["signatures"] = []
    (root / "bundle.sig").write_text(json.dumps(sig))
    with pytest.raises(BundleError, match="bundle.sig holds no signature"):
        open_bundle(root, trust=[signing_keys[1]])
    (root / "bundle.sig").write_bytes(b"\xff\x00")
    with pytest.raises(BundleError, match="bundle.sig is not a Sigstore bundle"):
        open_bundle(root)  # even without a trust store: a damaged signature is never ignored


def test_upstream_model_signing_verifies_our_signature(signed_bundle, signing_keys):
    """bundle.sig is a plain OpenSSF model-signing signature: its own verifier accepts it."""
    from model_signing import verifying

    verifying.Config().use_elliptic_key_verifier(public_key=signing_keys[1]).verify(
        signed_bundle, signed_bundle / "bundle.sig")


# -- command line -------------------------------------------------------------------------------
def medexport(*args):
    exe = Path(sys.executable).with_name("medexport")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_verify_exit_codes(signed_bundle, pneumonia_bundle, signing_keys, tmp_path):
    _, public, stranger = signing_keys
    ok = medexport("verify", signed_bundle, "--trust", public)
    assert ok.returncode == 0, ok.stderr
    from medexport.models.registry import get_config

    version = get_config("pneumonia-cxr").version
    assert f"OK   pneumonia-cxr {version}" in ok.stdout and "signature valid; signer: trusted (publisher)" in ok.stdout
    for args, message in [((signed_bundle, "--trust", stranger), "signature valid; signer: not trusted (not in the"),
                          ((pneumonia_bundle, "--trust", public), "no signature; signer: none (unsigned)"),
                          ((signed_bundle,), "signature valid; signer: not trusted (no trust store)")]:
        proc = medexport("verify", *args)  # intact, but not from a trusted publisher: 1
        assert proc.returncode == 1 and message in proc.stdout, proc.stdout + proc.stderr
    keys = medexport("keygen", "-o", tmp_path / "k", "--name", "lab")
    assert keys.returncode == 0 and (tmp_path / "k" / "lab.key.pem").stat().st_mode & 0o077 == 0
    again = medexport("keygen", "-o", tmp_path / "k", "--name", "lab")
    assert again.returncode == 2 and "already exist" in again.stderr


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.1, (2, 32 * 32)).astype(np.float32), "w")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_build_signs_the_bundle_and_the_zip_verifies(signing_keys, tmp_path, cache_dir):
    private, public, _ = signing_keys
    out = tmp_path / "tiny.zip"
    proc = medexport("build", _tiny_onnx(tmp_path / "tiny.onnx"), "--task", "classification", "--labels", "a,b",
                     "--input-size", 32, "--target", "onnxruntime", "-o", out, "--sign-key", private)
    assert proc.returncode == 0, proc.stderr
    assert "signed by publisher" in proc.stderr
    assert "bundle.sig" in zipfile.ZipFile(out).namelist()
    assert medexport("verify", out, "--trust", public).returncode == 0
    inspect = medexport("inspect", out)
    assert "signature valid, signer not trusted (no trust store)" in inspect.stdout  # checked, not trusted
    bad = medexport("build", tmp_path / "tiny.onnx", "--task", "classification", "--labels", "a,b",
                    "--input-size", 32, "--target", "onnxruntime", "-o", tmp_path / "t2", "--sign-key", public)
    assert bad.returncode == 2 and "cannot read signing key" in bad.stderr  # checked before the build runs


# -- desktop ------------------------------------------------------------------------------------
def test_viewer_refuses_unsigned_bundles_unless_the_clinic_allows(signed_bundle, pneumonia_bundle, signing_keys,
                                                                  tmp_path, monkeypatch):
    from medexport.desktop import trust
    from medexport.desktop.catalog import find_bundles

    home = tmp_path / "home"
    (home / "trust").mkdir(parents=True)
    shutil.copy(signing_keys[1], home / "trust")
    monkeypatch.setenv("MEDEXPORT_HOME", str(home))
    monkeypatch.delenv("MEDEXPORT_TRUST", raising=False)
    policy = trust.open_options()["trust"]
    assert [k.name for k in policy.keys] == ["publisher"] and not policy.allow_unsigned and policy.required
    found, problems = find_bundles([signed_bundle.parent, pneumonia_bundle.parent])
    assert [e.path for e in found] == [signed_bundle.resolve()]
    assert found[0].signed_by.startswith("Signed by publisher (key ")
    assert any("is not signed" in p for p in problems)
    (home / "viewer.ini").write_text("[General]\nallow_unsigned_bundles=true\n")
    found, problems = find_bundles([pneumonia_bundle.parent])
    assert found and found[0].signed_by.startswith("Unsigned (allowed") and not problems
    shutil.rmtree(home / "trust")
    (home / "viewer.ini").write_text("[General]\n")
    # no store configured: the publishers' keys shipped with the app (the demo key) are the store,
    # so a stranger's signature and an unsigned bundle are refused, a demo-signed one opens
    assert [k.name for k in trust.policy().keys] == [p.name.split(".")[0] for p in sorted(trust.SHIPPED.glob("*.pem"))]
    found, problems = find_bundles([signed_bundle.parent, pneumonia_bundle.parent])
    assert not found and len(problems) == 2 and any("not in the trust store" in p for p in problems)
    assert any("is not signed" in p for p in problems)


def test_demo_key_pair_matches_and_ships_with_the_viewer():
    from medexport.desktop.trust import SHIPPED
    from medexport.engine.signing import read_key, signing_key
    from medexport.export.demo import DEMO_SIGN_KEY

    shipped = [read_key(p) for p in sorted(SHIPPED.glob("*.pem"))]
    assert [k.name for k in shipped] == ["medexport-demo-not-for-clinical-use"]
    assert signing_key(DEMO_SIGN_KEY).fingerprint == shipped[0].fingerprint
    assert "NOT FOR CLINICAL USE" in (DEMO_SIGN_KEY.parent / "README.md").read_text()


def test_the_engine_verifies_signatures_without_model_signing(signed_bundle, signing_keys, tmp_path):
    """The clinic app ships without model-signing and its Sigstore client stack (requests, grpc,
    pydantic...): the engine checks the same signature with cryptography alone."""
    trust = signing_keys[1]  # the publisher's public key file
    code = ("import sys\nfor m in ('model_signing', 'sigstore', 'requests'): sys.modules[m] = None\n"
            "from medexport.engine import open_bundle\n"
            f"m = open_bundle({str(signed_bundle)!r}, trust=[{str(trust)!r}])\n"
            "print(m.signature.signed, m.signature.trusted, m.signature.signer)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True", "publisher"], proc.stderr
