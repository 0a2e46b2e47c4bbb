"""Plain-text views of results and bundles for the CLI."""
from __future__ import annotations

import json

from medexport.engine.bundle import read_manifest


def render_result(r) -> str:
    head = f"{r.source}\n  {r.model_id} {r.model_version} [{r.backend} {r.precision}]  bundle {r.bundle_sha256[:12]}"
    lines = [head]
    for label, score in r.scores.items():
        mark = ""
        if label in r.thresholds:
            t = r.thresholds[label]
            mark = f"  threshold {t:.3f}  -> {'POSITIVE' if score >= t else 'negative'}"
        lines.append(f"  {label:<20} {score:7.4f}{mark}")
    if r.heatmap is not None:
        lines.append(f"  heatmap: where the model looked for '{r.heatmap_label}' (not a localisation)")
    t = r.timings_ms
    lines.append(f"  time {t['total']:.1f} ms (read {t['read']:.1f}, preprocess {t['preprocess']:.1f}, "
                 f"infer {t['infer']:.1f})")
    if r.disclaimer:
        lines.append(f"  {r.disclaimer}")
    return "\n".join(lines)


def inspect_bundle(path) -> tuple[str, dict]:
    """Verify checksums, then describe the bundle: model, I/O, pre/post-processing, artifacts, validation."""
    manifest, sha, root = read_manifest(path, verify=True)
    reports = {a.key: json.loads((root / a.report).read_text()) for a in manifest.artifacts if a.report}
    pre, post = manifest.preprocess, manifest.postprocess
    lines = [
        f"bundle     {root}",
        f"sha256     {sha}  (all {len(manifest.files)} file checksums verified)",
        f"model      {manifest.model_id} {manifest.model_version}  task {manifest.task}",
        f"labels     {', '.join(manifest.labels)}",
        f"input      {manifest.input.name} {list(manifest.input.shape)} {manifest.input.dtype}",
        f"outputs    " + ", ".join(f"{o.name} {list(o.shape)}" for o in manifest.outputs),
        f"preprocess greyscale display [0,1] -> crop {pre.crop} -> {pre.resample} resize to "
        f"{pre.size[0]}x{pre.size[1]} -> (x - {list(pre.mean)}) / {list(pre.std)}",
        f"postprocess {post.activation}; thresholds " + ", ".join(f"{k} >= {v:.4f}" for k, v in post.thresholds.items()),
        f"intended   {manifest.intended_use}",
        f"medical device: {'yes' if manifest.medical_device else 'NO (demo / research only)'}",
        f"built      {manifest.provenance.get('built_at')} on {manifest.provenance.get('machine', {}).get('processor')}",
        f"tools      " + ", ".join(f"{k} {v}" for k, v in manifest.provenance.get("tools", {}).items()),
        "",
        f"{'artifact':<18} {'MB':>6} {'golden diff':>11} {'heatmap r':>9}  validation (source -> artifact)",
    ]
    for a in manifest.artifacts:
        size = sum((root / p).stat().st_size for p in a.files.values()) / 1e6
        rep = reports.get(a.key, {})
        g = rep.get("golden", {})
        corr = g.get("heatmap_correlation", {}).get("mean")
        lines.append(f"{a.key:<18} {size:6.2f} {g.get('max_abs_score_diff', float('nan')):11.1e} "
                     f"{'-' if corr is None else f'{corr:.3f}':>9}  {_validation_text(rep.get('validation'))}")
    training = manifest.provenance.get("training") or {}
    if training.get("validation"):
        v = training["validation"]
        lines += ["", "model card numbers (source model, validation split):"]
        for k in ("auroc", "accuracy", "sensitivity", "specificity"):
            lo, hi = v[k]["ci95"]
            lines.append(f"  {k:<12} {v[k]['value']:.3f}  (95 % CI {lo:.3f}-{hi:.3f})")
    if manifest.card:
        lines += ["", f"model card: {root / manifest.card}"]
    data = {"path": str(root), "sha256": sha, "manifest": manifest.to_dict(), "reports": reports}
    return "\n".join(lines), data


def _validation_text(v: dict | None) -> str:
    if not v:
        return "- (build with --val to measure)"
    parts = []
    for label, m in v["per_label"].items():
        src, art = m["source"], m["artifact"]
        parts.append(f"{label}: AUROC {src['auroc']['value']:.4f}->{art['auroc']['value']:.4f}, "
                     f"sens {src['sensitivity']['value']:.3f}->{art['sensitivity']['value']:.3f}, "
                     f"spec {src['specificity']['value']:.3f}->{art['specificity']['value']:.3f}")
    budget = "" if v["max_drop"] is None else f"; budget AUROC {v['max_drop']}, decisions {v['max_decision_drop']}"
    return "; ".join(parts) + f"; {v['n_flips']} flips of {v['n']}{budget}"
