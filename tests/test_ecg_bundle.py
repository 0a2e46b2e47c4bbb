"""ecg-rhythm end to end: every format through the bundle, parity, CLI, card numbers."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medexport.engine import ConfigurationError, InvalidInputError, open_bundle
from medexport.engine.io.ecg import read_ecg


@pytest.fixture(scope="module")
def model(ecg_bundle):
    with open_bundle(ecg_bundle) as m:
        yield m


def test_every_format_gives_a_rhythm_with_beats(model, shared, pydicom_file, tmp_path):
    ecg = shared / "ecg"
    aecg = read_ecg(ecg / "hl7-aecg" / "example_12lead.xml")
    csv = tmp_path / "ecg.csv"
    rows = "\n".join(",".join(f"{v:.4f}" for v in row) for row in aecg.signals.T)
    csv.write_text(f"# fs=500\n{','.join(aecg.leads)}\n{rows}\n")
    sources = [ecg / "cinc2017-af" / "A00001.hea", pydicom_file("waveform_ecg.dcm"), ecg / "hl7-aecg" / "example_12lead.xml",
               csv, ecg / "ptbdb" / "s0010_re.hea", ecg / "cinc2021-12lead" / "E07500.hea"]
    for src in sources:
        r = model.predict(str(src))
        assert set(r.scores) == {"normal", "af", "other", "noisy"} and abs(sum(r.scores.values()) - 1) < 1e-5
        assert len(r.beats) >= 4 and len(r.saliency) == len(r.beats) and r.saliency.max() <= 1
        assert r.stats["heart_rate_bpm"] and 35 < r.stats["heart_rate_bpm"] < 180
        assert r.lead in r.leads and r.lead_choice in ("signal quality", "only lead")
        assert r.warnings == () and all(q["ok"] for q in r.quality if q["lead"] in r.leads)
    r = model.predict(str(csv))
    assert r.lead in aecg.leads and r.fs == 500


def test_array_needs_fs_and_lead_is_reported(model, shared):
    signal = read_ecg(shared / "ecg" / "cinc2017-af" / "A00004.hea").signals[0]
    r = model.predict(signal, fs=300)
    assert r.lead == "ECG" and r.windows >= 1
    with pytest.raises(Exception, match="sampling rate"):
        model.predict(signal)
    r = model.predict(str(shared / "ecg" / "mitdb" / "100.hea"), lead="V5")
    assert r.lead == "V5"


def test_cinc_af_records_come_out_as_af(model, shared):
    """Records labelled A in CinC 2017 (training data for the shipped model: checks the pipeline end to end)."""
    folder = shared / "ecg" / "cinc2017-af"
    af = [line.split(",")[0] for line in (folder / "REFERENCE.csv").read_text().split() if line.endswith(",A")][:10]
    called = [model.predict(str(folder / f"{name}.hea")).label for name in af]
    assert called.count("af") >= 8, called


def test_mitdb_sinus_is_not_af(model, shared):
    r = model.predict(str(shared / "ecg" / "mitdb" / "100.hea"))
    assert r.label != "af" and r.windows > 50
    truth = np.array([s for s, sym in read_ecg(shared / "ecg" / "mitdb" / "100.hea").annotations if sym in "NAV"])
    near = np.abs(r.beats[:, None] - truth[None, :]).min(1) <= 0.1 * 360
    assert near.mean() > 0.98  # beats on the source's own time base


def test_openvino_and_onnxruntime_agree(ecg_bundle, shared):
    path = str(shared / "ecg" / "cinc2017-af" / "A00005.hea")
    with open_bundle(ecg_bundle, backend="openvino") as ov, open_bundle(ecg_bundle, backend="onnxruntime") as ort:
        a, b = ov.predict(path), ort.predict(path)
    assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
    assert np.abs(a.saliency - b.saliency).max() < 1e-3


def test_image_options_are_refused(model, shared):
    with pytest.raises(ConfigurationError, match="frame do not apply to a ecg_rhythm bundle"):
        model.predict(str(shared / "ecg" / "cinc2017-af" / "A00001.hea"), frame=0)


def test_cli_predict_json(ecg_bundle, pydicom_file):
    exe = Path(sys.executable).with_name("medexport")
    proc = subprocess.run([str(exe), "predict", str(ecg_bundle), pydicom_file("waveform_ecg.dcm"), "--lead", "V2",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)[0]
    assert out["lead"] == "V2" and out["label"] in ("normal", "af", "other", "noisy") and out["beats_s"]


def test_card_reports_cross_validation_and_other_devices(ecg_bundle):
    from medexport.models import get_config

    record = get_config("ecg-rhythm").training_record()
    cv = record["cross_validation"]["f1"]
    assert set(cv) == {"N", "A", "O", "~", "cinc"} and 0 < cv["cinc"]["ci95"][0] <= cv["cinc"]["value"]
    card = get_config("ecg-rhythm").card_path.read_text()
    assert f"{cv['cinc']['value']:.3f}" in card and "MIT-BIH 100" in card and "not a medical device" in card.lower()


def test_auto_takes_the_measured_fastest_cpu_runtime(model):
    assert model.manifest.backend_preference == ("onnxruntime", "openvino") and model.backend == "onnxruntime"


def test_fp16_lstm_builds_and_runs_on_both_runtimes(tmp_path, cache_dir):
    """Regression: ONNX Runtime's ALL-level layout transforms crashed (SIGSEGV) on an FP16 LSTM graph."""
    from medexport.export.build import BuildOptions, build

    out = build("ecg-rhythm", tmp_path / "e16", BuildOptions(targets=["onnxruntime", "openvino"], precisions=["fp16"]),
                emit=lambda m: None)
    for backend in ("onnxruntime", "openvino"):
        with open_bundle(out, backend=backend) as m:
            assert m.precision == "fp16" and m.self_test().passed


def _csv_with(record, tmp_path, name, change) -> Path:
    """A real 12-lead record written as CSV, with ``change(signals)`` applied (a lead spoiled)."""
    signals = record.signals.copy()
    change(signals)
    rows = "\n".join(",".join(f"{v:.4f}" for v in row) for row in signals.T)
    path = tmp_path / f"{name}.csv"
    path.write_text(f"# fs={record.fs:g}\n{','.join(record.leads)}\n{rows}\n")
    return path


def test_default_chooses_leads_by_quality_and_says_which(model, shared):
    r = model.predict(str(shared / "ecg" / "cinc2021-12lead" / "E07500.hea"))
    assert 1 <= len(r.leads) <= 3 and r.lead == r.leads[0] and r.lead_choice == "signal quality"
    assert len(r.quality) == 12 and set(r.lead_scores) == set(r.leads)
    for k, score in r.scores.items():  # pooled over the deciding leads' windows: between their own scores
        own = [s[k] for s in r.lead_scores.values()]
        assert min(own) - 1e-4 <= score <= max(own) + 1e-4
    assert any(line.startswith("decided by lead") and r.leads[0] in line for line in r.detail_lines())
    d = r.to_dict()
    assert d["leads"] == list(r.leads) and d["lead_choice"] == "signal quality" and len(d["signal_quality"]) == 12


def test_spoiled_leads_are_not_chosen_but_an_explicit_lead_is_honoured(model, shared, tmp_path):
    record = read_ecg(shared / "ecg" / "cinc2021-12lead" / "E07500.hea")
    before = model.predict(str(shared / "ecg" / "cinc2021-12lead" / "E07500.hea")).leads

    def spoil(s):
        for i, name in enumerate(record.leads):
            if name in before:  # flat, clipped, beat-less: every lead the default chose
                s[i] = {0: s[i] * 0 + s[i][0], 1: np.minimum(s[i], np.percentile(s[i], 97)),
                        2: np.sin(np.arange(s.shape[1]) / record.fs * 2 * np.pi * 0.3)}[before.index(name)]
    path = _csv_with(record, tmp_path, "spoiled", spoil)
    r = model.predict(str(path))
    assert not set(r.leads) & set(before) and r.warnings == ()
    spoiled = {q["lead"]: q["reasons"] for q in r.quality if q["lead"] in before}
    assert {reason.split(" ")[0].rstrip(":") for reasons in spoiled.values() for reason in reasons} >= {"flat", "clipped"}
    clipped = before[1]
    r = model.predict(str(path), lead=clipped)
    assert r.leads == (clipped,) and r.lead == clipped and r.lead_choice == "requested"
    assert [w.code for w in r.warnings] == ["low_signal_quality"] and r.warnings[0].message.startswith(f"lead {clipped}: clipped")
    assert r.to_dict()["warnings"][0]["code"] == "low_signal_quality"
    with pytest.raises(InvalidInputError, match=f"beats found in lead {before[0]}"):
        model.predict(str(path), lead=before[0])  # the flat lead: nothing to analyse


def test_only_noisy_leads_still_answer_with_a_warning(model, shared, tmp_path):
    record = read_ecg(shared / "ecg" / "mitdb" / "100.hea")
    rng = np.random.default_rng(1)
    n = int(60 * record.fs)
    signals = record.signals[:, :n] + rng.normal(0, 1.5, (2, n)).astype(np.float32)
    r = model.predict(signals, fs=record.fs)
    assert len(r.leads) == 1 and [w.code for w in r.warnings] == ["low_signal_quality"]
    assert r.warnings[0].message.startswith(f"lead {r.lead}: noisy")
