"""Plain-text views of results and bundles for the CLI."""
from __future__ import annotations

import json

from medexport.engine.bundle_read import read_manifest
from medexport.engine.signing import check_signature

from .guards import describe_report


def render_result(r) -> str:
    """A result as the CLI prints it: provenance, the decision, the score table, the task's details."""
    lines = [r.source, f"  {r.model_id} {r.model_version} [{r.backend} {r.precision}]  bundle {r.bundle_sha256[:12]}",
             f"  decision: {r.headline()}"]
    if r.not_assessed:
        lines.append(f"  the model's answer, not vouched for: {r.decision()}")
    lines += [f"  WARNING {w}" for w in r.warnings]
    for row in r.score_rows():
        verdict = ('above' if row.hit else 'below') if r.not_assessed else ('POSITIVE' if row.hit else 'negative')
        mark = "" if row.threshold is None else f"  threshold {row.threshold:.3f}  -> {verdict}"
        lines.append(f"  {row.label:<20} {row.score:7.4f}{mark}")
    lines += [f"  {line}" for line in r.detail_lines()]
    t = r.timings_ms
    lines.append(f"  time {t['total']:.1f} ms (read {t['read']:.1f}, preprocess {t['preprocess']:.1f}, "
                 f"infer {t['infer']:.2f})")
    if r.disclaimer:
        lines.append(f"  {r.disclaimer}")
    return "\n".join(lines)


def artifact_table(manifest, root, reports: dict, sizes: dict | None = None) -> list[str]:
    """One line per artifact (size, worst golden disagreement vs tolerance, heatmap agreement,
    validation), then the refused ones: what ``inspect`` and the end of ``build`` print.
    ``sizes``: bytes per artifact key, when the files are not here (a served bundle)."""
    lines = [f"{'artifact':<18} {'MB':>6} {'golden vs source (tolerance)':>28} {'heatmap r':>9} {'borderline':>10} "
             f"{'decode':>6}  validation (source -> artifact)"]
    for a in manifest.artifacts:
        size = (sizes[a.key] if sizes is not None else sum((root / p).stat().st_size for p in a.files.values())) / 1e6
        rep = reports.get(a.key, {})
        g = rep.get("golden", {})
        corr = g.get("heatmap_correlation", {}).get("mean")
        agreement = f"{g.get('max_disagreement', float('nan')):.1e} ({a.tolerance:.0e})"
        lines.append(f"{a.key:<18} {size:6.2f} {agreement:>28} "
                     f"{'-' if corr is None else f'{corr:.3f}':>9} {f'+-{a.borderline:.3f}':>10} "
                     f"{f'>={a.decode_margin}x' if a.decode_margin else 'full':>6}  {describe_report(rep.get('validation'))}")
    for a in manifest.artifacts:
        lines += proof_lines(a.key, reports.get(a.key, {}).get("proof"))
    for r in manifest.provenance.get("refused_artifacts", []):
        lines.append(f"{r['artifact']:<18} REFUSED at build time, not in the bundle: {r['reason']}")
    measures = {g.get("measure") for g in (r.get("golden", {}) for r in reports.values()) if g.get("measure")}
    if measures:
        lines.append(f"golden vs source: {', '.join(sorted(measures))} on every golden input "
                     "(studies unlike the training data included), against the float source model")
    if any(r.get("reduced_decode") for r in reports.values()):
        lines.append("decode: how images are decoded for the model by default; >=Nx: at reduced resolution keeping N x "
                     "its input, where the build showed scores stay within the tolerance (reports/<artifact>.json, "
                     "reduced_decode; predict --full-decode to opt out)")
    return lines


def proof_lines(key: str, p: dict | None) -> list[str]:
    """What the build proved of a quantized artifact (export/steps/proof.py), in three lines."""
    if not p:
        return []
    i, c, a = p["in_distribution"], p["coverage"], p["answered_itself"]
    agree = p.get("ood_agreement", {})
    return [f"{key:<18} in distribution: worst {i['max_disagreement']:.1e} (tolerance {p['tolerance']:.0e}) on "
            f"{i['golden']} golden + {i['validation']} validation studies, worst {i['worst_item']}",
            f"{'':<18} coverage: {c['flagged']} of {c['beyond_tolerance']} beyond the tolerance flagged by its own "
            f"screening ({c['n']} rows unlike the training data, other kinds, perturbed)",
            f"{'':<18} answered itself: {a['agreement_set']:.0%} of the agreement set, {a['validation']:.0%} of "
            f"validation (the rest at fp32)"
            + (f"; OOD decisions agree with fp32 on {agree.get('agreement_set', float('nan')):.0%} of the agreement set, "
               f"{agree.get('validation', float('nan')):.0%} of validation" if agree else "")]


def robustness_lines(reports: dict) -> list[str]:
    """Each artifact's robustness table (built with --robustness), else nothing."""
    from .robustness import table_lines

    lines = []
    for key, rep in reports.items():
        if rep.get("robustness"):
            r = rep["robustness"]
            lines += ["", f"robustness {key}: {r['metric']} on {r['studies']} validation studies, each perturbed "
                          f"as read, before preprocessing (seed {r['seed']}; drop = clean - perturbed)",
                      *table_lines(r)]
    return lines


def read_reports(manifest, root) -> dict:
    return {a.key: json.loads((root / a.report).read_text()) for a in manifest.artifacts if a.report}


def ood_lines(ood) -> list[str]:
    """The out-of-distribution reference as ``inspect`` shows it: threshold, flag rates, detection."""
    if ood is None:
        return ["ood        none (built without --calib): unusual studies are not flagged"]
    rep = ood.report
    inside = rep.get("in_distribution", {})
    lines = [f"ood        {ood.method}; fitted on {ood.fitted_on}; threshold {ood.threshold:.2f} ({ood.threshold_rule})",
             f"           in-distribution flagged: {inside.get('flag_rate', float('nan')):.1%} of "
             f"{inside.get('checked_on')} held-out studies ({inside.get('from')})"]
    for kind, v in rep.get("other_kinds", {}).items():
        refused = f", {v['refused_by_reader']} refused by the reader" if v.get("refused_by_reader") else ""
        lines.append(f"           {kind} ({v['modality']}): {v['flag_rate']:.0%} of {v['n']} flagged{refused}")
    if "detection_auroc" in rep:
        lines.append(f"           detection AUROC in-distribution vs other kinds: {rep['detection_auroc']:.3f}")
    if rep.get("not_available"):
        lines.append(f"           not checked (no such studies in the shared data): {', '.join(rep['not_available'])}")
    return lines


def trust_section(intended, ood, artifacts) -> str:
    """The model card's generated section on the signals a result may carry, with this build's numbers."""
    bands = ", ".join(f"{a.key} +-{a.borderline:.3f}" for a in artifacts)
    ood_text = "\n".join(line.strip() for line in ood_lines(ood))
    return f"""## Trust signals (generated by the build)
- **Intended use checked from the DICOM header:** {intended.describe()}{f" ({intended.note})" if intended.note else ""}.
  A study whose header contradicts it is answered with `outside_intended_use` naming the tag, or refused
  in strict mode. A picture has no header and is not checked (`no_intended_use_check`).
- **Out of distribution (`r.ood`):**
```
{ood_text}
```
  A flag says the study is unlike the training data in the model's own features; no flag does not
  mean the answer is right.
- **Borderline band around each threshold** (the artifact's tolerance, widened to where validation
  saw decisions flip): {bands}. A quantized artifact's borderline answer is re-run on fp32.
"""


def inspect_bundle(path) -> tuple[str, dict]:
    """Verify checksums, then describe the bundle: model, I/O, pre/post-processing, artifacts, validation.
    A ``triton://`` address: what its server states about the bundle it serves (:func:`inspect_served`)."""
    from medexport.engine.remote import is_remote

    if is_remote(path):
        return inspect_served(path)
    manifest, sha, root = read_manifest(path, verify=True)
    signature = check_signature(root, allow_unsigned=True)  # shown, not required; a bad signature still fails
    reports = read_reports(manifest, root)
    lines = [f"bundle     {root}", f"sha256     {sha}  (all {len(manifest.files)} file checksums verified)",
             f"signature  {signature.describe()}", *manifest_lines(manifest, root, reports)]
    if manifest.card:
        lines += ["", f"model card: {root / manifest.card}"]
    data = {"path": str(root), "sha256": sha, "signature": signature.to_dict(), "manifest": manifest.to_dict(),
            "reports": reports}
    return "\n".join(lines), data


def inspect_served(url: str) -> tuple[str, dict]:
    """A served model as its server states it (``RemoteModel.describe``): the manifest (its SHA-256
    checked here against the bundle the server names), the server's signature check, reports,
    sizes and card, and the artifact, backend and device the server runs."""
    from medexport.engine import open_bundle

    with open_bundle(url) as model:
        stated, prov = model.describe(), model.provenance
    manifest, reports = stated["manifest"], stated["reports"]
    lines = [f"served     {model.url}: the server's statement (it verified every checksum and the signature when it "
             "opened the bundle; the manifest's SHA-256 checked here)",
             f"sha256     {prov.bundle_sha256}",
             f"signature  {stated['signature']['describe']} (the server's trust store)",
             f"runs       {stated['artifact'].key}: {prov.backend} {prov.precision} on {prov.device.split(' via ')[0]}; "
             f"strict mode on the server {'on' if stated['strict'] else 'off'}",
             *manifest_lines(manifest, None, reports, stated["sizes"])]
    if stated["card"]:
        lines += ["", "model card (as served):", "", stated["card"].rstrip()]
    data = {"served": model.url, "sha256": prov.bundle_sha256, "signature": stated["signature"],
            "artifact": stated["artifact"].key, "backend": prov.backend, "precision": prov.precision,
            "device": prov.device, "strict": stated["strict"], "manifest": manifest.to_dict(), "reports": reports,
            "sizes": stated["sizes"], "card": stated["card"]}
    return "\n".join(lines), data


def manifest_lines(manifest, root, reports: dict, sizes: dict | None = None) -> list[str]:
    """``inspect``'s description of a bundle after its identity lines: model, I/O, pre/post-processing,
    intended use, OOD reference, build, artifacts, robustness, model card numbers."""
    pre, post = manifest.preprocess, manifest.postprocess
    pre_text = pre.describe()
    decision = (", ".join(f"{k} >= {v:.4f}" for k, v in post.thresholds.items()) if post.thresholds
                else "argmax (no thresholds)")
    lines = [
        f"model      {manifest.model_id} {manifest.model_version}  task {manifest.task}",
        f"labels     {', '.join(manifest.labels)}",
        f"input      {manifest.input.name} {list(manifest.input.shape)} {manifest.input.dtype}",
        "outputs    " + ", ".join(f"{o.name} {list(o.shape)}" for o in manifest.outputs),
        f"preprocess {pre_text}",
        f"postprocess {post.activation}; decision {decision}",
        f"intended   {manifest.intended_use}",
        f"checked    header: {manifest.intended_for.describe()}"
        + (f" ({manifest.intended_for.note})" if manifest.intended_for.note else ""),
        f"medical device: {'yes' if manifest.medical_device else 'NO (demo / research only)'}",
        *ood_lines(manifest.ood),
        f"built      {manifest.provenance.get('built_at')} on {manifest.provenance.get('machine', {}).get('processor')}",
        "tools      " + ", ".join(f"{k} {v}" for k, v in manifest.provenance.get("tools", {}).items()),
        "",
        *artifact_table(manifest, root, reports, sizes),
        *robustness_lines(reports),
    ]
    training = manifest.provenance.get("training") or {}
    if training.get("held_out"):
        h = training["held_out"]
        lines += ["", f"model card numbers (source model, held-out images {h['images']}):"]
        metrics = [(k, m) for k, m in h.items() if isinstance(m, dict) and "ci95" in m] + \
            [(f"{k} {sub}", m) for k, group in h.items() if isinstance(group, dict)
             for sub, m in group.items() if isinstance(m, dict) and "ci95" in m]  # e.g. AP per label
        lines += [f"  {k:<12} {m['value']:.3f}  (95 % CI {m['ci95'][0]:.3f}-{m['ci95'][1]:.3f})" for k, m in metrics]
    if training.get("cross_validation"):
        cv = training["cross_validation"]["f1"]
        lines += ["", "model card numbers (source model, cross-validated F1):"]
        lines += [f"  {k:<12} {m['value']:.3f}  (95 % CI {m['ci95'][0]:.3f}-{m['ci95'][1]:.3f})" for k, m in cv.items()]
    if training.get("validation"):
        v = training["validation"]
        lines += ["", "model card numbers (source model, validation split):"]
        usual = [k for k in ("auroc", "accuracy", "sensitivity", "specificity") if k in v]
        for k in usual + sorted(k for k in v if k not in usual and isinstance(v[k], dict) and "ci95" in v[k]):
            lo, hi = v[k]["ci95"]  # a volume model's validation: dice, dice per region
            lines.append(f"  {k:<12} {v[k]['value']:.3f}  (95 % CI {lo:.3f}-{hi:.3f})")
    return lines
