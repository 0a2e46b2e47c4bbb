"""Plain-text views of results and bundles for the CLI."""
from __future__ import annotations

import json

from medexport.engine.bundle import read_manifest
from medexport.engine.signing import check_signature


def render_result(r) -> str:
    head = f"{r.source}\n  {r.model_id} {r.model_version} [{r.backend} {r.precision}]  bundle {r.bundle_sha256[:12]}"
    if hasattr(r, "beats"):
        return _render_ecg(r, head)
    if hasattr(r, "probability"):
        return _render_segmentation(r, head)
    lines = [head]
    for label, score in r.scores.items():
        mark = ""
        if label in r.thresholds:
            t = r.thresholds[label]
            mark = f"  threshold {t:.3f}  -> {'POSITIVE' if score >= t else 'negative'}"
        lines.append(f"  {label:<20} {score:7.4f}{mark}")
    if r.heatmap_grid is not None:
        lines.append(f"  heatmap: where the model looked for '{r.heatmap_label}' (not a localisation)")
    t = r.timings_ms
    lines.append(f"  time {t['total']:.1f} ms (read {t['read']:.1f}, preprocess {t['preprocess']:.1f}, "
                 f"infer {t['infer']:.1f})")
    if r.disclaimer:
        lines.append(f"  {r.disclaimer}")
    return "\n".join(lines)


def _render_segmentation(r, head: str) -> str:
    t = r.timings_ms
    lines = [head, f"  {r.label}: {r.mask.mean() * 100:.1f} % of {r.mask.shape[1]} x {r.mask.shape[0]} pixels "
                   f"(probability >= {r.thresholds[r.label]:.2f}; {r.tiles} tiles)",
             f"  time {t['total']:.1f} ms (read {t['read']:.1f}, preprocess {t['preprocess']:.1f}, infer {t['infer']:.1f})"]
    if r.disclaimer:
        lines.append(f"  {r.disclaimer}")
    return "\n".join(lines)


def _render_ecg(r, head: str) -> str:
    st = r.stats
    lines = [head, f"  rhythm: {r.label.upper()}   (lead {r.lead}, {len(r.beats)} beats, {r.windows} window(s))"]
    for label, score in r.scores.items():
        lines.append(f"  {label:<20} {score:7.4f}{'  <-' if label == r.label else ''}")
    if st.get("heart_rate_bpm"):
        lines.append(f"  heart rate {st['heart_rate_bpm']:.0f} bpm; RR CV {st['rr_cv']:.3f}, "
                     f"normalised RMSSD {st['rmssd_norm']:.3f}, pNN50 {st['pnn50']:.2f}")
    t = r.timings_ms
    lines.append(f"  time {t['total']:.1f} ms (read {t['read']:.1f}, preprocess {t['preprocess']:.1f}, infer {t['infer']:.2f})")
    if r.disclaimer:
        lines.append(f"  {r.disclaimer}")
    return "\n".join(lines)


def inspect_bundle(path) -> tuple[str, dict]:
    """Verify checksums, then describe the bundle: model, I/O, pre/post-processing, artifacts, validation."""
    manifest, sha, root = read_manifest(path, verify=True)
    signature = check_signature(root, allow_unsigned=True)  # shown, not required; a bad signature still fails
    reports = {a.key: json.loads((root / a.report).read_text()) for a in manifest.artifacts if a.report}
    pre, post = manifest.preprocess, manifest.postprocess
    if pre.kind == "tiles":
        pre_text = (f"greyscale display [0,1] -> tiles {pre.tile}x{pre.tile} overlapping {pre.overlap} px (no resizing) "
                    f"-> (x - {list(pre.mean)}) / {list(pre.std)}; tiles blended back onto the source grid")
    elif pre.kind == "ecg":
        pre_text = (f"lead {pre.lead} (default) -> resample {pre.fs:g} Hz -> band-pass {pre.band[0]}-{pre.band[1]} Hz -> "
                    f"R peaks ({pre.detector}) -> beats {pre.beat_window[0]}..{pre.beat_window[1]} s + RR features -> "
                    f"windows of {pre.beats} beats (stride {pre.stride})")
    else:
        pre_text = (f"greyscale display [0,1] -> crop {pre.crop} -> {pre.resample} resize to {pre.size[0]}x{pre.size[1]} "
                    f"-> (x - {list(pre.mean)}) / {list(pre.std)}")
    decision = (", ".join(f"{k} >= {v:.4f}" for k, v in post.thresholds.items()) if post.thresholds
                else "argmax (no thresholds)")
    lines = [
        f"bundle     {root}",
        f"sha256     {sha}  (all {len(manifest.files)} file checksums verified)",
        f"signature  {signature.describe()}",
        f"model      {manifest.model_id} {manifest.model_version}  task {manifest.task}",
        f"labels     {', '.join(manifest.labels)}",
        f"input      {manifest.input.name} {list(manifest.input.shape)} {manifest.input.dtype}",
        "outputs    " + ", ".join(f"{o.name} {list(o.shape)}" for o in manifest.outputs),
        f"preprocess {pre_text}",
        f"postprocess {post.activation}; decision {decision}",
        f"intended   {manifest.intended_use}",
        f"medical device: {'yes' if manifest.medical_device else 'NO (demo / research only)'}",
        f"built      {manifest.provenance.get('built_at')} on {manifest.provenance.get('machine', {}).get('processor')}",
        "tools      " + ", ".join(f"{k} {v}" for k, v in manifest.provenance.get("tools", {}).items()),
        "",
        f"{'artifact':<18} {'MB':>6} {'golden vs source (tolerance)':>28} {'heatmap r':>9}  validation (source -> artifact)",
    ]
    for a in manifest.artifacts:
        size = sum((root / p).stat().st_size for p in a.files.values()) / 1e6
        rep = reports.get(a.key, {})
        g = rep.get("golden", {})
        corr = g.get("heatmap_correlation", {}).get("mean")
        agreement = f"{g.get('max_disagreement', float('nan')):.1e} ({a.tolerance:.0e})"
        lines.append(f"{a.key:<18} {size:6.2f} {agreement:>28} "
                     f"{'-' if corr is None else f'{corr:.3f}':>9}  {_validation_text(rep.get('validation'))}")
    for r in manifest.provenance.get("refused_artifacts", []):
        lines.append(f"{r['artifact']:<18} REFUSED at build time, not in the bundle: {r['reason']}")
    measures = {g.get("measure") for g in (r.get("golden", {}) for r in reports.values()) if g.get("measure")}
    if measures:
        lines.append(f"golden vs source: {', '.join(sorted(measures))} on every golden input "
                     "(studies unlike the training data included), against the float source model")
    training = manifest.provenance.get("training") or {}
    if training.get("held_out"):
        h = training["held_out"]
        lines += ["", f"model card numbers (source model, held-out images {h['images']}):"]
        lines += [f"  {k:<12} {h[k]['value']:.3f}  (95 % CI {h[k]['ci95'][0]:.3f}-{h[k]['ci95'][1]:.3f})" for k in ("dice", "iou")]
    if training.get("cross_validation"):
        cv = training["cross_validation"]["f1"]
        lines += ["", "model card numbers (source model, cross-validated F1):"]
        lines += [f"  {k:<12} {m['value']:.3f}  (95 % CI {m['ci95'][0]:.3f}-{m['ci95'][1]:.3f})" for k, m in cv.items()]
    if training.get("validation"):
        v = training["validation"]
        lines += ["", "model card numbers (source model, validation split):"]
        for k in ("auroc", "accuracy", "sensitivity", "specificity"):
            lo, hi = v[k]["ci95"]
            lines.append(f"  {k:<12} {v[k]['value']:.3f}  (95 % CI {lo:.3f}-{hi:.3f})")
    if manifest.card:
        lines += ["", f"model card: {root / manifest.card}"]
    data = {"path": str(root), "sha256": sha, "signature": signature.to_dict(), "manifest": manifest.to_dict(),
            "reports": reports}
    return "\n".join(lines), data


def _validation_text(v: dict | None) -> str:
    if not v:
        return "- (build with --val to measure)"
    if v["metric"] == "dice":
        budget = "" if v["max_drop"] is None else f"; budget {v['max_drop']}"
        return (f"Dice {v['source']['dice']['value']:.4f}->{v['artifact']['dice']['value']:.4f}, agreement Dice "
                f"{v['agreement_dice']:.4f}, {v['changed_pixels'] * 100:.3f} % pixels changed, n={v['n']}{budget}")
    if v["metric"] == "macro_f1":
        src, art = v["source"]["macro_f1"]["value"], v["artifact"]["macro_f1"]["value"]
        budget = "" if v["max_drop"] is None else f"; budget {v['max_drop']}"
        return f"macro F1 {src:.4f}->{art:.4f}; {v['n_flips']} flips of {v['n']}{budget}"
    parts = []
    for label, m in v["per_label"].items():
        src, art = m["source"], m["artifact"]
        parts.append(f"{label}: AUROC {src['auroc']['value']:.4f}->{art['auroc']['value']:.4f}, "
                     f"sens {src['sensitivity']['value']:.3f}->{art['sensitivity']['value']:.3f}, "
                     f"spec {src['specificity']['value']:.3f}->{art['specificity']['value']:.3f}")
    budget = "" if v["max_drop"] is None else f"; budget AUROC {v['max_drop']}, decisions {v['max_decision_drop']}"
    return "; ".join(parts) + f"; {v['n_flips']} flips of {v['n']}{budget}"
