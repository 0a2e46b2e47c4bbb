"""Train ``ecg-rhythm`` on the 300 labelled CinC 2017 records (single lead, AliveCor, 300 Hz).

    python -m medexport.models.recipes.ecg_rhythm [--epochs 60] [--folds 5]

Every record goes through the engine's own preprocessing (resample to 250 Hz, band-pass,
gradient-method R peaks, beat tokens). 5-fold stratified cross-validation gives the card's numbers
(record level, pooled out-of-fold predictions, bootstrap CIs); the shipped model is then
trained on all 300 records and checked on ECGs from other devices, rates and leads.
Augmentation: shifted copies of each record as other recorders would take it (200/250/360 Hz,
0.25-1.0 mV, 0-40 µV noise; ``ecg_shift``), beat amplitude and noise, heart-rate scaling of the RR
features, random crops of 8-32 beats (so that 10-s records are not out of distribution). Class
imbalance: class-weighted cross-entropy. Shift check: the out-of-fold predictions again on every
record re-recorded at 200 or 360 Hz on a 0.34-mV lead with 20 or 40 µV noise (a Holter's lead I).
"""
from __future__ import annotations

import argparse
import csv
import time

import numpy as np

from medexport.engine import ecg_beats
from medexport.engine.compare import bootstrap_ci
from medexport.engine.io.ecg import read_ecg
from medexport.engine.manifest import EcgPreprocess
from medexport.engine.tasks import item_scores
from medexport.engine.tasks.ecg_rhythm import EcgRhythmTask

from ..data import shared_data
from ..registry import create_model, get_config

from . import ecg_shift
from .common import fmt_metric, publish, save_weights, seed_everything, stratified_split, training_environment

NAME = "ecg-rhythm"
CODES = {"N": 0, "A": 1, "O": 2, "~": 3}
AF_SNOMED, SINUS_SNOMED = "164889003", {"426783006", "427084000", "426177001"}
PAC_SNOMED, PVC_SNOMED = "284470004", "427172004"  # premature atrial / ventricular contractions


def spec() -> EcgPreprocess:
    return EcgPreprocess(**get_config(NAME).preprocess)


def load_cinc2017() -> tuple[list[tuple[np.ndarray, float]], np.ndarray, list[str]]:
    """(signal in mV, fs) per record, labels, names."""
    folder = shared_data() / "ecg" / "cinc2017-af"
    with open(folder / "REFERENCE.csv") as fh:
        rows = [r for r in csv.reader(fh) if r]
    signals, labels, names = [], [], []
    for name, code in rows:
        record = read_ecg(folder / f"{name}.hea")
        signals.append((record.signals[0].astype(np.float64), record.fs))
        labels.append(CODES[code])
        names.append(name)
    return signals, np.array(labels), names


def batch_of(token_list, rng, s: EcgPreprocess, augment: bool, copies=None) -> np.ndarray:
    """Training batch; with ``copies`` (shifted copies per record) a record is swapped for one of
    its copies in 1 - ``KEEP_ORIGINAL`` of the draws."""
    if augment and copies is not None:
        token_list = [tok if rng.random() < ecg_shift.KEEP_ORIGINAL else alt[int(rng.integers(len(alt)))]
                      for tok, alt in zip(token_list, copies)]
    t, width = s.beats, s.beat_samples + len(ecg_beats.RR_FEATURES)
    out = np.zeros((len(token_list), t, width + 1), np.float32)
    for i, tok in enumerate(token_list):
        n = len(tok)
        length = int(rng.integers(8, t + 1)) if augment else t  # short windows too: 10-s records have ~10 beats
        length = min(length, n)
        start = rng.integers(0, n - length + 1) if n > length else 0
        x = tok[start:start + length].copy()
        if augment and len(x):
            x[:, :s.beat_samples] *= rng.uniform(0.8, 1.2)
            x[:, :s.beat_samples] += rng.normal(0, rng.uniform(0, 0.08), x[:, :s.beat_samples].shape)
            x[:, s.beat_samples + 3] *= rng.uniform(0.85, 1.15)  # rr_median_s: heart-rate change
        out[i, :len(x), :width] = x
        out[i, :len(x), width] = 1.0
    return out


def record_probs(model, token_list, s: EcgPreprocess) -> np.ndarray:
    """Record-level probabilities exactly as the engine computes them (windows, weighted mean)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for tok in token_list:
            feeds, index = ecg_beats.windows(tok, s)
            probs = torch.softmax(model(torch.from_numpy(feeds)), 1).numpy()
            out.append(item_scores(probs, np.zeros(len(probs), np.int64), EcgRhythmTask.row_weights(feeds), 1)[0])
    return np.array(out)


def fit(token_list, labels, epochs: int, seed: int, s: EcgPreprocess, emit=print, copies=None):
    import torch

    seed_everything(seed)
    model = create_model(NAME, pretrained=False).train()
    counts = np.bincount(labels, minlength=4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(len(labels) / (4 * counts), dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    crops, batch = 4, 64
    steps = epochs * int(np.ceil(len(labels) * crops / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(np.repeat(np.arange(len(labels)), crops))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = torch.from_numpy(batch_of([token_list[j] for j in idx], rng, s, augment=True,
                                          copies=None if copies is None else [copies[j] for j in idx]))
            loss = loss_fn(model(x), torch.from_numpy(labels[idx]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
        if (epoch + 1) % 20 == 0:
            emit(f"  epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    return model.eval()


def f1_scores(labels: np.ndarray, pred: np.ndarray) -> dict:
    out = {}
    for name, k in CODES.items():
        tp = np.sum((pred == k) & (labels == k))
        denom = np.sum(pred == k) + np.sum(labels == k)
        out[name] = float(2 * tp / denom) if denom else float("nan")
    out["cinc"] = float(np.mean([out["N"], out["A"], out["O"]]))
    return out


def with_ci(labels, pred) -> dict:
    point = f1_scores(labels, pred)
    out = {}
    for key in point:
        lo, hi = bootstrap_ci(lambda y, p: f1_scores(y, p)[key], labels, pred, n=1000)
        out[key] = {"value": round(point[key], 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


def cross_source(model, s: EcgPreprocess) -> dict:
    """Share of windows/records called AF on ECGs from other devices, rates and leads (none are AF)."""
    root = shared_data() / "ecg"
    out = {}
    mit = read_ecg(root / "mitdb" / "100.hea")
    sig, lead = mit.lead()
    chunk = int(30 * mit.fs)
    pieces = [ecg_beats.beats_of(sig[i:i + chunk], mit.fs, s).tokens for i in range(0, len(sig) - chunk + 1, chunk)]
    pred = record_probs(model, pieces, s).argmax(1)
    out["mitdb_100"] = {"what": f"MIT-BIH 100, lead {lead}, 360 Hz, 30-s windows (sinus rhythm, a few ectopic beats)",
                        "n": len(pred), "called_af": int((pred == 1).sum()), "called_normal": int((pred == 0).sum())}
    out["cinc2021"] = cinc2021(model, s, "II", None)
    out["cinc2021_lead_I_200hz"] = cinc2021(model, s, "I", 200.0)
    from pydicom.data import get_testdata_file

    for key, path, what in (("ptb_s0010", root / "ptbdb" / "s0010_re.hea", "PTB s0010 (MI, sinus), lead ii, 1000 Hz"),
                            ("pydicom_waveform", get_testdata_file("waveform_ecg.dcm"), "pydicom waveform_ecg.dcm, lead II, 1000 Hz"),
                            ("hl7_aecg", root / "hl7-aecg" / "example_12lead.xml", "HL7 aECG example, lead II, 500 Hz")):
        r = read_ecg(path)
        p = record_probs(model, [ecg_beats.beats_of(r.lead()[0], r.fs, s).tokens], s)[0]
        out[key] = {"what": what, "label": ["normal", "af", "other", "noisy"][int(p.argmax())],
                    "scores": [round(float(v), 3) for v in p]}
    return out


def cinc2021(model, s: EcgPreprocess, lead: str, rate: float | None) -> dict:
    """AF calls on one lead of the CinC 2021 12-lead sample (500 Hz, 10 s), resampled to ``rate`` if given."""
    toks, sinus, af_true, pac = [], [], [], []
    for h in sorted((shared_data() / "ecg" / "cinc2021-12lead").glob("*.hea")):
        r = read_ecg(h)
        dx = next((c.split(":", 1)[1].strip() for c in r.meta["comments"] if c.startswith("Dx")), "")
        sig, fs = r.lead(lead)[0].astype(np.float64), r.fs
        toks.append(ecg_beats.beats_of(sig if rate is None else ecg_shift.resample(sig, fs, rate), rate or fs, s).tokens)
        codes = set(dx.split(","))
        sinus.append(bool(codes & SINUS_SNOMED))
        af_true.append(AF_SNOMED in codes)
        pac.append(PAC_SNOMED in codes)
    pred = record_probs(model, toks, s).argmax(1)
    sinus, pac = np.array(sinus), np.array(pac)
    called_af = pred == 1
    return {"what": f"CinC 2021 12-lead sample, lead {lead}, {rate or 500:.0f} Hz, 10 s (none coded AF)",
            "n": len(pred), "coded_af": int(sum(af_true)), "called_af": int(called_af.sum()),
            "called_noisy": int((pred == 3).sum()),
            "called_af_coded_pac": int((called_af & pac).sum()), "coded_pac": int(pac.sum()),
            "no_pac_called_af": int((called_af & ~pac).sum()), "no_pac": int((~pac).sum()),
            "sinus_records": int(sinus.sum()), "sinus_called_normal": int((pred[sinus] == 0).sum())}


def shift_check(labels: np.ndarray, oof: dict) -> dict:
    """CinC F1 (bootstrap CI) and AF / noisy rates (Wilson CI) of the out-of-fold predictions per condition."""
    return {name: {"f1": with_ci(labels, p.argmax(1)), **ecg_shift.af_rates(labels, p.argmax(1))}
            for name, p in oof.items()}


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified folds (0..folds-1 per record) from repeated stratified splits of what remains."""
    remaining = np.arange(len(labels))
    fold_of = np.zeros(len(labels), int)
    for f in range(folds):
        if f == folds - 1:
            held = remaining
        else:
            _, held_local = stratified_split(labels[remaining], 1.0 / (folds - f), seed + f)
            held = remaining[held_local]
        fold_of[held] = f
        remaining = np.setdiff1d(remaining, held)
    return fold_of


def cross_validate(conditions: dict, labels: np.ndarray, copies: list, folds: int, epochs: int, seed: int,
                   s: EcgPreprocess) -> tuple[dict, np.ndarray]:
    """Out-of-fold record probabilities under every shift condition, and each record's fold."""
    tokens = conditions["as recorded"]
    oof = {name: np.zeros((len(labels), 4)) for name in conditions}
    fold_of = fold_assignment(labels, folds, seed)
    for f in range(folds):
        tr, te = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        print(f"fold {f + 1}/{folds}: train {len(tr)}, test {len(te)}", flush=True)
        model = fit([tokens[i] for i in tr], labels[tr], epochs, seed + f, s, copies=[copies[i] for i in tr])
        for name, toks in conditions.items():
            oof[name][te] = record_probs(model, [toks[i] for i in te], s)
    return oof, fold_of


def prepared(seed: int, s: EcgPreprocess) -> tuple:
    """Records, labels, the check's conditions (tokens) and the seeded shifted training copies."""
    signals, labels, names = load_cinc2017()
    conditions = ecg_shift.condition_tokens(signals, s)
    rng = np.random.default_rng(seed + 1)
    copies = [ecg_shift.training_copies(x, fs, s, rng) for x, fs in signals]
    return labels, conditions, copies


def train(epochs: int = 60, folds: int = 5, seed: int = 0) -> dict:

    start = time.time()
    s = spec()
    labels, conditions, copies = prepared(seed, s)
    tokens = conditions["as recorded"]
    print(f"preprocessed {len(labels)} records (and shifted copies) in {time.time() - start:.0f} s", flush=True)
    oof, _ = cross_validate(conditions, labels, copies, folds, epochs, seed, s)
    pred = oof["as recorded"].argmax(1)
    cv = with_ci(labels, pred)
    shifts = shift_check(labels, oof)
    print(ecg_shift.markdown(shifts), flush=True)
    confusion = np.zeros((4, 4), int)
    for y, p in zip(labels, pred):
        confusion[y, p] += 1
    print("CV F1: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in cv.items()), flush=True)
    model = fit(tokens, labels, epochs, seed, s, copies=copies)
    config = get_config(NAME)
    weights_sha = save_weights(model, config)
    checks = cross_source(model, s)
    record = {"model": NAME, "version": config.version, "thresholds": {},
              "decision_rule": "argmax of the record's mean window probabilities",
              "cross_validation": {"folds": folds, "f1": cv, "confusion": confusion.tolist(),
                                   "labels": list(CODES)}, "shift_check": shifts, "cross_source": checks,
              "data": {"folder": "ecg/cinc2017-af", "records": int(len(labels)),
                       "per_class": {k: int((labels == v).sum()) for k, v in CODES.items()}},
              "recipe": {"epochs": epochs, "seed": seed, "crops_per_record": 4, "loss": "class-weighted CE",
                         "augmentation": (f"{ecg_shift.COPIES} shifted copies per record (200/250/360 Hz, 0.25-1.0 mV, "
                                          f"0-40 µV noise) replacing the record in {1 - ecg_shift.KEEP_ORIGINAL:.0%} of draws, "
                                          "beat amplitude x0.8-1.2, gaussian noise, heart rate x0.85-1.15, "
                                          "random crops of 8-32 beats")},
              "parameters": int(sum(p.numel() for p in model.parameters())),
              "weights_sha256": weights_sha, "training_seconds": round(time.time() - start, 1),
              "environment": training_environment()}
    return publish(config, record, model_card(config, record))


def model_card(config, r: dict) -> str:
    cv = r["cross_validation"]["f1"]
    fmt = fmt_metric
    conf = r["cross_validation"]["confusion"]
    conf_rows = "\n".join(f"| {lab} | " + " | ".join(str(v) for v in row) + " |" for lab, row in zip("NAO~", conf))
    xs = r["cross_source"]
    return f"""# Model card: {config.name} {config.version}

**Demo model, not a medical device. Not for diagnosis or treatment decisions.**

## What it does
Classifies the rhythm of one ECG lead as `normal` (sinus rhythm), `af` (atrial fibrillation),
`other` rhythm or `noisy`. Multi-lead records: by default the engine checks every lead's signal
quality and the best up to 3 leads decide together (their windows pooled, beat-weighted); `lead=` picks one. The
result says which lead(s) decided (see Leads below), and gives R peaks, heart rate, RR irregularity (CV, normalised
RMSSD, pNN50) and a per-beat saliency (where the model looked; not a localisation).

Intended use: {config.intended_use}

## How
The engine resamples the lead to 250 Hz, band-passes 0.5-40 Hz (zero-phase, numpy FFT), finds R peaks
with NeuroKit2's gradient method on the 5-15 Hz QRS band (numpy; MIT-BIH 100: sensitivity and
positive predictivity ≥ 0.999 on both leads),
and turns each beat into a token: 160 samples around R (amplitude- and polarity-normalised) plus
eight RR-interval features (the beat's own, and the record's irregularity). A 1-D CNN embeds each beat; a bidirectional LSTM reads up to 32 beats
with their RR features; per-beat scores are averaged into the window's logits. Records are cut
into windows of 32 beats (stride 16); the record's scores are the beat-weighted mean. {r['parameters'] / 1000:.0f} k
parameters. Why beats and RR intervals: RR irregularity is device-agnostic, raw morphology is
not (see the project's ECG modelling notes).

{changes_120(r)}

Changes in 1.1.0: preprocessing without scipy or wfdb (so the clinic app ships without them),
retrained. Version 1.0.0 used scipy filters and wfdb's XQRS: CinC score 0.718 (0.667-0.764), `other`
F1 0.564; CinC 2021 PAC records called AF 10 (now 8); MIT-BIH windows called normal 51 (now 44).

## Training data
PhysioNet/CinC Challenge 2017 (validation set, ODC-By 1.0): {r['data']['records']} single-lead
AliveCor records, 300 Hz, 9-61 s: {r['data']['per_class']}. Recipe: `python -m {config.recipe}`
({r['recipe']['epochs']} epochs, AdamW + one-cycle, {r['recipe']['augmentation']}; class-weighted loss).
Trained in {r['training_seconds']:.0f} s in all (CV and final model) on {r['environment']['threads']} CPU threads.

## Cross-validated performance ({r['cross_validation']['folds']}-fold, record level, bootstrap 95 % CI)
| class | F1 |
|---|---|
| normal (N) | {fmt(cv['N'])} |
| AF (A) | {fmt(cv['A'])} |
| other (O) | {fmt(cv['O'])} |
| noisy (~) | {fmt(cv['~'])} |
| **CinC 2017 score** (mean F1 of N, A, O) | **{fmt(cv['cinc'])}** |

Confusion (rows true, columns predicted N A O ~):

| true | N | A | O | ~ |
|---|---|---|---|---|
{conf_rows}

The challenge winners reached 0.83 on the hidden test set with 8528 training records (28x more).

{shift_section(r)}

## Other devices, rates and leads (shipped model)
- {xs['mitdb_100']['what']}: {xs['mitdb_100']['called_af']} of {xs['mitdb_100']['n']} windows called AF, {xs['mitdb_100']['called_normal']} called normal.
- {xs['cinc2021_lead_I_200hz']['what']}: {xs['cinc2021_lead_I_200hz']['called_af']} of {xs['cinc2021_lead_I_200hz']['n']} records called AF ({xs['cinc2021_lead_I_200hz']['called_af_coded_pac']} of them coded PACs), {xs['cinc2021_lead_I_200hz']['called_noisy']} called noisy.
- {xs['cinc2021']['what']}: {xs['cinc2021']['called_af']} of {xs['cinc2021']['n']} records called AF, and {xs['cinc2021']['called_af_coded_pac']} of those are coded premature atrial contractions (SNOMED 284470004; {xs['cinc2021']['coded_pac']} records carry that code); {xs['cinc2021']['no_pac_called_af']} of the {xs['cinc2021']['no_pac']} records without PACs were called AF. {xs['cinc2021']['sinus_called_normal']} of {xs['cinc2021']['sinus_records']} sinus-coded records were called normal (many carry other findings too).
- {xs['ptb_s0010']['what']}: {xs['ptb_s0010']['label']}.
- {xs['pydicom_waveform']['what']}: {xs['pydicom_waveform']['label']}.
- {xs['hl7_aecg']['what']}: {xs['hl7_aecg']['label']}.

## Limits
- **Frequent premature atrial contractions are called AF**: the rhythm is irregular, and with
  few beats (10-s records) the model cannot tell PACs from irregularly irregular AF. A clinician
  must read any AF call on the trace (P waves); the viewer shows beats and RR intervals for that.
- 300 training records from one device; "other rhythm" is a mixed bag and the weakest class.
- Depends on R-peak detection: very noisy leads, pacing and wide-complex rhythms are outside what it has seen.
- Needs at least 4 detectable beats in the deciding lead; it says so instead of guessing.
- Scores are not calibrated probabilities.

Weights SHA-256: `{r['weights_sha256']}`
"""


def changes_120(r: dict) -> str:
    """What 1.2.0 changed and what it bought (the 2-fold old-vs-new comparison is static: it trains twice)."""
    return f"""Changes in 1.2.0: trained with shifted copies of each record (see Shift check below). What it
bought, {COMPARISON['what']} (record counts; CinC F1 with bootstrap 95 % CI):

| condition | recipe | AF sensitivity | AF called noisy | non-AF called AF | noisy recall | CinC F1 |
|---|---|---|---|---|---|---|
""" + "\n".join(f"| {k} | {v} | " + " | ".join(cells) + " |" for k, rows in COMPARISON["rows"].items()
                for v, cells in rows.items()) + "\n\n" + COMPARISON["note"]


def shift_section(r: dict) -> str:
    if "shift_check" not in r:
        return ""
    sc = r["shift_check"]
    worst = min(sc, key=lambda k: sc[k]["af_sensitivity"]["value"])
    return f"""## Shift check (same out-of-fold predictions as above, bootstrap / Wilson 95 % CI)
Every CinC 2017 record re-recorded as a low-amplitude limb lead of another recorder would take it
(`models/recipes/ecg_shift.py`: resampled, rescaled to a 1st-99th percentile range of 0.34 mV, the
median of an external Holter's lead I, plus white recorder noise; noise seeded per record), then
predicted by the fold model that did not train on it. Gap: CinC F1 minus the as-recorded value.

{ecg_shift.markdown(sc)}

Lowest AF sensitivity: {worst}, {sc[worst]['af_sensitivity']['value']:.3f} ({sc[worst]['af_called_noisy']} AF records called noisy).
{MISS_NOTE}

{RULE_NOTE}"""


COMPARISON = {  # /tmp/h8/ecg_c.py-style run: 2 stratified folds of 150 (seed 0), 50 epochs, old vs new recipe
    "what": "2-fold cross-validation on CinC 2017 (150 / 150 records, same folds and seeds, 1.1.0 recipe vs 1.2.0 recipe)",
    "rows": {
        "as recorded": {"1.1.0": ("39/50", "4", "9/250", "24/30", "0.673 (0.618-0.725)"),
                        "1.2.0": ("39/50", "6", "14/250", "20/30", "0.673 (0.617-0.726)")},
        "200 Hz, 0.34 mV, 20 µV noise": {"1.1.0": ("22/50", "19", "3/250", "25/30", "0.599 (0.533-0.656)"),
                                         "1.2.0": ("38/50", "7", "10/250", "19/30", "0.677 (0.618-0.731)")},
        "360 Hz, 0.34 mV, 20 µV noise": {"1.1.0": ("30/50", "13", "3/250", "26/30", "0.665 (0.604-0.719)"),
                                         "1.2.0": ("41/50", "5", "12/250", "23/30", "0.690 (0.636-0.742)")},
        "200 Hz, 0.34 mV, 40 µV noise": {"1.1.0": ("7/50", "29", "0/250", "30/30", "0.403 (0.337-0.471)"),
                                         "1.2.0": ("38/50", "7", "13/250", "19/30", "0.661 (0.604-0.716)")},
    },
    "note": ("Unseen data, same fold models (fold 0 + fold 1 of 50 records each): CinC 2021 lead I at 200 Hz called AF "
             "10 + 4 (1.1.0) vs 11 + 11 (1.2.0), lead II at 200 Hz 12 + 4 vs 9 + 8, every one coded premature atrial "
             "contractions; MIT-BIH 100 at 360 Hz, 60 windows per lead: 0 called AF on MLII and V5 with both recipes "
             "(called normal, MLII: 50 + 20 vs 57 + 39). The AF decision no longer breaks on a low, noisy lead; the "
             "price: genuinely noisy records are called noisy less often (as recorded 24/30 -> 20/30 here; the "
             "shipped 5-fold run below keeps 25/30 as recorded but 17/30 with 40 µV added), a few more non-AF "
             "records called AF, and more PAC records called AF on lead I."),
}
MISS_NOTE = ("Remaining miss: the issue's target is AF sensitivity >= 0.95 by default and >= 0.90 on any limb lead "
             "on an external Holter; out of fold here, even as recorded, it is below 0.90 (1.1.0's 5-fold run: 42/50 as "
             "recorded, not measured shifted; the 2-fold comparison above: 39/50 as recorded with either recipe). With 50 AF training "
             "records, the AF/other boundary (irregular rhythms with PACs, short 10-s records) and records whose "
             "R peaks are lost in noise cost the rest; more AF data, not more augmentation, is what would close it. "
             "The external Holter numbers are measured outside the project and are not reproduced here.")
RULE_NOTE = ("RR-irregularity rule, tried and not shipped (`python -m medexport.models.recipes.ecg_rr_rule`): a "
             "record called other or noisy, with AF its second score, switched to AF when its normalised RMSSD and"
             " pNN50 are high; parameters chosen nested (on the other 4 folds' out-of-fold predictions, all four "
             "conditions pooled, the best sensitivity whose specificity falls by at most a budget). A rerun of the"
             " 5-fold cross-validation (1 thread: 41/50 AF as recorded, 38/50 at 200 Hz, 0.34 mV, 20 µV) gave: "
             "with a 1-point specificity budget no rule in any fold; with 2 points (RMSSD >= 0.08, pNN50 >= 0.5, "
             "AF score >= 0.2) AF sensitivity 41 -> 42/50 as recorded, 38 -> 40/50 at 200 Hz 20 µV, 40 -> 42/50 at"
             " 360 Hz, 38 -> 40/50 at 200 Hz 40 µV, for specificity 240 -> 236, 242 -> 237, 237 -> 234, 238 -> 234"
             " of 250 and noisy recall 24 -> 21/30 as recorded. The missed AF records' RMSSD (0.08-0.74) overlaps "
             "the non-AF records' (median 0.15-0.24, 90th percentile 0.49-0.68), and 2-3 of them are called "
             "normal, which the rule never touches: the RR statistics the network already reads carry no further "
             "separation.")


def refresh_card() -> dict:
    """Re-run the cross-source checks with the shipped weights and rewrite record and card (no training)."""
    config = get_config(NAME)
    record = config.training_record()
    record["cross_source"] = cross_source(create_model(NAME), spec())
    return publish(config, record, model_card(config, record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card-only", action="store_true", help="refresh checks and card from the shipped weights")
    args = parser.parse_args()
    record = refresh_card() if args.card_only else train(args.epochs, args.folds, args.seed)
    print({k: v["value"] for k, v in record["cross_validation"]["f1"].items()})
    print(record["cross_source"])


if __name__ == "__main__":
    main()
