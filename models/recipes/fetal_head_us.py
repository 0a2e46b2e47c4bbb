"""Train ``fetal-head-us`` (compact U-Net) on the HC18 training set: fetal skull outline -> ellipse -> HC.

    python -m medexport.models.recipes.fetal_head_us [--epochs 8]

Split by pregnancy (images of one pregnancy share a number: 010_HC, 010_2HC), seeded: 20 % of
the pregnancies are held out and never trained on. The card's Dice and HC error come from them,
predicted through the engine's own preprocessing, resizing back, ellipse fit and measurement.
Masks: the sonographer's 1-px ellipse outline, filled. Whole frames squashed to 256 x 176
(soft, area-averaged masks as targets), flips, random scale / rotation / shift (one affine warp of
image and mask together) and contrast/brightness jitter; BCE + soft Dice.
"""
from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medexport.engine.compare import bootstrap_ci, dice, iou
from medexport.engine.errors import InvalidInputError
from medexport.engine.ellipse import boundary_points, head_measurements, head_outline
from medexport.engine.manifest import ImagePreprocess
from medexport.engine.preprocess import image_to_tensor, map_to_source, resize

from ..data import shared_data
from ..registry import create_model, get_config
from .common import fmt_metric, publish, save_weights, seed_everything, training_environment

NAME = "fetal-head-us"
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Hc18Item:
    name: str  # image file name, e.g. "014_2HC.png"
    pregnancy: str  # the shared number, e.g. "014"
    pixel_mm: float
    hc_mm: float


@lru_cache(maxsize=1)
def hc18_items(root: str | None = None) -> tuple:
    """Every image listed in ``pixel_size_and_hc.csv``."""
    folder = shared_data() / "segmentation" / "hc18" if root is None else __import__("pathlib").Path(root)
    with open(folder / "pixel_size_and_hc.csv", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and r[0].endswith(".png")]
    return tuple(Hc18Item(r[0], r[0].split("_")[0], float(r[1]), float(r[2])) for r in rows)


def hc18_split(items: tuple, seed: int = SPLIT_SEED) -> tuple[list, list]:
    """(train, held-out) items, split by pregnancy: no pregnancy is on both sides."""
    pregnancies = sorted({it.pregnancy for it in items})
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(pregnancies)[:int(round(len(pregnancies) * HELD_OUT_FRACTION))])
    return [it for it in items if it.pregnancy not in held], [it for it in items if it.pregnancy in held]


def read_item(folder, item: Hc18Item) -> tuple[np.ndarray, np.ndarray]:
    """The image in [0, 1] as the engine reads it, and the filled outline as a bool mask."""
    from PIL import Image
    from scipy.ndimage import binary_fill_holes

    from medexport.engine.io.image import read_image

    pixels = read_image(folder / "images" / item.name, frame=0).pixels
    outline = np.asarray(Image.open(folder / "images" / item.name.replace(".png", "_Annotation.png")).convert("L")) > 127
    return pixels, binary_fill_holes(outline)


def predict_probability(model, pixels: np.ndarray, spec: ImagePreprocess) -> np.ndarray:
    """Probability on the source grid, exactly as a bundle computes it."""
    import torch

    x, geometry = image_to_tensor(pixels, spec)
    with torch.no_grad():
        grid = torch.sigmoid(model(torch.from_numpy(x))).numpy()[0, 0]
    return map_to_source(grid, geometry)


def _load(items, folder, spec):
    xs, ys = [], []
    for it in items:
        pixels, mask = read_item(folder, it)
        xs.append(image_to_tensor(pixels, spec)[0][0])
        ys.append(resize(mask.astype(np.float32), spec.size, "box")[None])
    return np.stack(xs), np.stack(ys)


def random_affine(x, y, rng, scale=(0.85, 1.15), degrees=15.0, shift=0.08):
    """The same random scale / rotation / shift of each image and its soft mask (bilinear, border
    padding for the image, zeros for the mask)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    s = rng.uniform(*scale, n)
    a = np.radians(rng.uniform(-degrees, degrees, n))
    t = rng.uniform(-shift, shift, (n, 2))
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = np.cos(a) / s, -np.sin(a) / s, t[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = np.sin(a) / s, np.cos(a) / s, t[:, 1]
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    return (F.grid_sample(x, grid, padding_mode="border", align_corners=False),
            F.grid_sample(y, grid, padding_mode="zeros", align_corners=False))


def train(epochs: int = 12, seed: int = 0, batch: int = 8, limit: int | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    start = time.time()
    torch.set_num_threads(2)
    seed_everything(seed)
    config = get_config(NAME)
    spec = ImagePreprocess(**config.preprocess)
    folder = shared_data() / "segmentation" / "hc18"
    train_items, held = hc18_split(hc18_items())
    if limit:
        train_items, held = train_items[:limit], held[:max(4, limit // 4)]
    x_all, y_all = _load(train_items, folder, spec)
    print(f"loaded {len(train_items)} training images in {time.time() - start:.0f} s", flush=True)
    rng = np.random.default_rng(seed)
    model = create_model(NAME, pretrained=False).train()
    steps_per_epoch = len(train_items) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        t0, order, total = time.time(), rng.permutation(len(train_items)), 0.0
        for s in range(steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch]
            x, y = x_all[idx].copy(), y_all[idx].copy()
            for i in range(len(idx)):
                if rng.random() < 0.5:
                    x[i], y[i] = x[i, :, ::-1], y[i, :, ::-1]
                if rng.random() < 0.5:
                    x[i], y[i] = x[i, ::-1], y[i, ::-1]
                x[i] = x[i] * rng.uniform(0.8, 1.2) + rng.uniform(-0.4, 0.4)  # contrast, brightness (normalised units)
            xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
            xt, yt = random_affine(xt, yt, rng)
            logits = model(xt)
            p = torch.sigmoid(logits)
            soft_dice = 1 - (2 * (p * yt).sum() + 1) / (p.sum() + yt.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, yt) + soft_dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{epochs} loss {total / steps_per_epoch:.4f} {time.time() - t0:.0f} s/epoch "
              f"({time.time() - start:.0f} s)", flush=True)
    model.eval()
    weights_sha = save_weights(model, config)
    train_seconds = time.time() - start
    threshold, rule = choose_threshold(model, train_items, folder, spec)
    held_out = evaluate(model, held, folder, spec, threshold)
    record = {"model": NAME, "version": config.version, "thresholds": {"head": threshold},
              "threshold_rule": rule, "held_out": held_out,
              "data": {"folder": "segmentation/hc18", "split": f"by pregnancy, seed {SPLIT_SEED}, "
                       f"{HELD_OUT_FRACTION:.0%} of pregnancies held out",
                       "train_images": len(train_items), "held_out_images": len(held),
                       "held_out_pregnancies": len({it.pregnancy for it in held}),
                       "target": "filled sonographer outline (HC18 annotation ellipse)"},
              "recipe": {"epochs": epochs, "batch": batch, "seed": seed, "loss": "BCE + soft Dice",
                         "input": "whole frame squashed to 256 x 176 (box filter)",
                         "augmentation": "h/v flips, scale 0.85-1.15, rotation +-15 deg, shift +-8 %, "
                                         "contrast x0.8-1.2, brightness +-0.4 (normalised)"},
              "weights_sha256": weights_sha, "training_seconds": round(train_seconds, 1),
              "environment": training_environment()}
    return publish(config, record, model_card(config, record))


THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def choose_threshold(model, train_items, folder, spec) -> tuple[float, str]:
    """The probability threshold whose HC error has the smallest mean absolute value on every
    fourth training image (the held-out pregnancies are never looked at)."""
    probe = train_items[::4]
    errors = {t: [] for t in THRESHOLDS}
    for it in probe:
        pixels, _ = read_item(folder, it)
        prob = predict_probability(model, pixels, spec)
        for t in THRESHOLDS:
            try:
                errors[t].append(abs(measure(prob, it.pixel_mm, t)["head_circumference_mm"] - it.hc_mm))
            except InvalidInputError:
                errors[t].append(it.hc_mm)
    mae = {t: float(np.mean(e)) for t, e in errors.items()}
    best = min(mae, key=mae.get)
    return best, (f"{best} on the sigmoid probability: the smallest HC mean absolute error on {len(probe)} training "
                  "images (" + ", ".join(f"{t}: {v:.2f} mm" for t, v in mae.items()) + "); held-out images not used")


def evaluate(model, items, folder, spec, threshold: float = 0.5, n_boot: int = 2000) -> dict:
    """Dice, HC / BPD / OFD errors (mm) on ``items`` through the engine's path."""
    rows = []
    for it in items:
        pixels, truth = read_item(folder, it)
        prob = predict_probability(model, pixels, spec)
        try:
            pred = measure(prob, it.pixel_mm, threshold)
        except InvalidInputError:  # no outline found: counted as a miss of the whole head
            pred = dict.fromkeys(("head_circumference_mm", "biparietal_diameter_mm", "occipitofrontal_diameter_mm"), 0.0)
        ref = head_measurements(boundary_points(truth.astype(np.float32)), (it.pixel_mm, it.pixel_mm))
        try:  # before 1.2.0: every crossing of the threshold, second blobs and holes included
            plain = head_measurements(boundary_points(prob, threshold), (it.pixel_mm, it.pixel_mm))["head_circumference_mm"]
        except InvalidInputError:
            plain = 0.0
        rows.append({"name": it.name, "dice": dice(prob >= threshold, truth), "iou": iou(prob >= threshold, truth),
                     "hc_err": pred["head_circumference_mm"] - it.hc_mm, "plain_hc_err": plain - it.hc_mm,
                     "pixel_mm": it.pixel_mm,
                     "bpd_err": pred["biparietal_diameter_mm"] - ref["biparietal_diameter_mm"],
                     "ofd_err": pred["occipitofrontal_diameter_mm"] - ref["occipitofrontal_diameter_mm"],
                     "truth_fit_hc_err": ref["head_circumference_mm"] - it.hc_mm})
    out = {"n_images": len(rows), "n_pregnancies": len({it.pregnancy for it in items}),
           "images": f"{len(rows)} of {len({it.pregnancy for it in items})} pregnancies",
           "no_ellipse": [r["name"] for r in rows if r["hc_err"] == -next(i.hc_mm for i in items if i.name == r["name"])]}
    for key, values in (("dice", [r["dice"] for r in rows]), ("iou", [r["iou"] for r in rows]),
                        ("hc_mae_mm", [abs(r["hc_err"]) for r in rows]),
                        ("hc_bias_mm", [r["hc_err"] for r in rows]),
                        ("bpd_mae_mm", [abs(r["bpd_err"]) for r in rows]),
                        ("ofd_mae_mm", [abs(r["ofd_err"]) for r in rows]),
                        ("truth_outline_fit_hc_mae_mm", [abs(r["truth_fit_hc_err"]) for r in rows])):
        v = np.asarray(values, np.float64)
        lo, hi = bootstrap_ci(lambda a: a.mean(), v, n=n_boot)
        out[key] = {"value": round(float(v.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    hc = np.abs([r["hc_err"] for r in rows])
    out["hc_abs_error_mm_percentiles"] = {p: round(float(np.percentile(hc, int(p[1:]))), 2) for p in ("p50", "p90", "p99")}
    out["worst"] = sorted(({"name": r["name"], "hc_err_mm": round(r["hc_err"], 2), "dice": round(r["dice"], 4)}
                           for r in rows), key=lambda r: -abs(r["hc_err_mm"]))[:5]
    plain = np.abs([r["plain_hc_err"] for r in rows])
    lo, hi = bootstrap_ci(lambda a: a.mean(), plain, n=n_boot)
    out["plain_outline_hc_mae_mm"] = {"value": round(float(plain.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    lo, hi = bootstrap_ci(lambda a, b: a.mean() - b.mean(), plain, hc, n=n_boot)  # paired: the same resampled frames
    out["largest_region_gain_mm"] = {"value": round(float(plain.mean() - hc.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    out["shift"] = shift_check(rows, n_boot)
    return out


def shift_check(rows: list, n_boot: int = 2000) -> dict:
    """HC MAE by acquisition setting: the held-out frames in thirds by pixel size (the machine's depth
    and zoom setting: small pixels are zoomed-in, early heads), each against the other two thirds."""
    px = np.array([r["pixel_mm"] for r in rows])
    err = np.abs([r["hc_err"] for r in rows])
    cuts = np.quantile(px, [1 / 3, 2 / 3])
    group = np.digitize(px, cuts, right=True)
    out = {}
    for g, name in enumerate(("small pixels (zoomed in)", "middle", "large pixels (deep setting)")):
        inside = err[group == g]
        lo, hi = bootstrap_ci(lambda a: a.mean(), inside, n=n_boot)
        rest = float(err[group != g].mean())
        out[name] = {"n": int(len(inside)), "pixel_mm": [round(float(px[group == g].min()), 3), round(float(px[group == g].max()), 3)],
                     "hc_mae_mm": {"value": round(float(inside.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]},
                     "gap_mm": round(float(inside.mean()) - rest, 4)}
    return out


def reevaluate() -> dict:
    """Evaluate the shipped weights again and rewrite the record's held-out part and the card."""
    import torch

    torch.set_num_threads(2)
    config = get_config(NAME)
    record = config.training_record()
    model = create_model(NAME, pretrained=True).eval()
    train_items, held = hc18_split(hc18_items())
    folder, spec = shared_data() / "segmentation" / "hc18", ImagePreprocess(**config.preprocess)
    threshold, record["threshold_rule"] = choose_threshold(model, train_items, folder, spec)
    record["thresholds"] = {"head": threshold}
    record["held_out"] = evaluate(model, held, folder, spec, threshold)
    return publish(config, record, model_card(config, record))


def measure(probability: np.ndarray, pixel_mm: float, threshold: float = 0.5) -> dict:
    """The engine's measurement of a source-grid probability map (isotropic pixels of ``pixel_mm``)."""
    return head_measurements(head_outline(probability, threshold), (pixel_mm, pixel_mm))


def target_sentence(h: dict, r: dict) -> str:
    """Whether the project's targets (Dice >= 0.96, HC MAE <= 2.0 mm) are met, said plainly."""
    dice, mae = h["dice"]["value"], h["hc_mae_mm"]["value"]
    met = [f"Dice {dice:.3f} {'>=' if dice >= 0.96 else '<'} 0.96", f"HC MAE {mae:.2f} mm {'<=' if mae <= 2.0 else '>'} 2.0 mm"]
    verdict = "met" if dice >= 0.96 and mae <= 2.0 else "**not met**"
    return (f"The project's targets are {verdict} on the held-out pregnancies ({'; '.join(met)}; "
            f"{r['recipe']['epochs']} epochs, {r['recipe']['input']}).")


def model_card(config, r: dict) -> str:
    h = r["held_out"]
    fmt = fmt_metric
    return f"""# Model card: {config.name} {config.version}

**Demo, not a medical device: not for diagnosis, not for dating a pregnancy.** The point is the pipeline.

## What it does
Outlines the fetal head in a 2-D ultrasound frame of the standard transthalamic plane, fits an
ellipse to the outline (direct least-squares fit, Fitzgibbon et al. 1999) and reports, on the
source pixel grid:
- head circumference (HC) = the ellipse's perimeter (Ramanujan), the HC18 convention (the HC of
  HC18 is the perimeter of the ellipse a sonographer drew on the skull outline);
- biparietal diameter (BPD) = the minor axis, occipito-frontal diameter (OFD) = the major axis,
  both outer edge to outer edge (the clinical BPD, outer-to-inner, is a few mm shorter);
- gestational age from HC (Hadlock et al. 1984: GA = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm),
  only for HC 8.5-36.0 cm (GA 13.7-42.4 weeks; the study covered 14-42 weeks); outside it the GA
  is refused ("outside the formula's range"), the lengths are still reported.
Millimetres need the pixel spacing: DICOM PixelSpacing (0028,0030) or the ultrasound region
calibration (0018,6011), or `--pixel-size` for pictures; without it the lengths stay in pixels.

Intended use: {config.intended_use}

## Architecture
U-Net, 5 levels (8/16/32/64/128 channels), batch norm, 1 logit map, 0.49 M parameters. The whole
frame is squashed to the model's input ({r['recipe']['input']}); the probability is resized back
(bilinear) to the source grid and thresholded at {r['thresholds']['head']} ({r['threshold_rule']}).

## Training data
HC18 challenge training set (van den Heuvel, de Bruijn, de Korte, van Ginneken, PLoS ONE 2018,
doi:10.1371/journal.pone.0200412; Radboud University Medical Center; CC BY 4.0): 799 frames
800 x 540 with the sonographer's head outline, pixel size and HC. Split by pregnancy
({r['data']['split']}): {r['data']['train_images']} images train, {r['data']['held_out_images']} images of
{r['data']['held_out_pregnancies']} pregnancies held out. The official HC18 test set is not used.
Recipe: `python -m {config.recipe}` ({r['recipe']['epochs']} epochs of batches of {r['recipe']['batch']},
AdamW + one-cycle, {r['recipe']['augmentation']}; {r['recipe']['loss']}).
Trained in {r['training_seconds']:.0f} s on {r['environment']['threads']} CPU threads.{(' ' + r['training_note']) if r.get('training_note') else ''}

## Held-out performance ({h['n_images']} images, {h['n_pregnancies']} pregnancies; through the engine's resizing, ellipse fit and measurement; bootstrap 95 % CI over images)
| metric | value |
|---|---|
| Dice (mask vs filled outline) | {fmt(h['dice'])} |
| HC mean absolute difference, mm | {fmt(h['hc_mae_mm'])} |
| HC mean signed difference, mm | {fmt(h['hc_bias_mm'])} |
| BPD mean absolute difference, mm (vs the ellipse fitted to the sonographer's outline) | {fmt(h['bpd_mae_mm'])} |
| OFD mean absolute difference, mm (same reference) | {fmt(h['ofd_mae_mm'])} |
| our ellipse fit on the sonographer's own outline vs the CSV HC, mm | {fmt(h['truth_outline_fit_hc_mae_mm'])} |

HC absolute difference percentiles (mm): {h['hc_abs_error_mm_percentiles']}. Worst frames:
{', '.join(f"{w['name']} ({w['hc_err_mm']:+.1f} mm, Dice {w['dice']:.2f})" for w in h['worst'])}: there the model
outlines only part of the head (small, early heads and faint skull edges), and the mean is dominated by them.
{target_sentence(h, r)} HC18 publishes only HC,
so the BPD/OFD references are our fit to the sonographer's outline. For scale: HC18 leaderboard
leaders reach about 1.7-2 mm on the official test set (a different set; not comparable one to one).

## What changed in 1.2.0 (same weights, postprocessing only)
The ellipse is fitted to the outline of the largest region of the thresholded probability, its
holes filled (engine/regions.py, numpy), instead of to every crossing of the threshold: a second
blob (a limb, the placenta) or a dark hole inside the skull no longer bends the fit. On the same
held-out frames: HC MAE {fmt(h['plain_outline_hc_mae_mm'])} mm before, {fmt(h['hc_mae_mm'])} mm after
(paired gain {fmt(h['largest_region_gain_mm'])} mm). Tried and not kept (HC MAE on the held-out
frames, threshold chosen on training frames): RANSAC on the outline 2.99-3.59 mm (it follows the
larger of two touching blobs), the convex hull of the region 2.78-3.09 mm, the median of fits at
thresholds 0.5/0.6/0.7 2.76 mm (no gain), a linear HC calibration 2.72 mm (not robust); later, on the
same frames at threshold 0.6: the ellipse from the region's second moments 2.82 mm, the boundary fit
without refits 2.74 mm, with a tighter outlier cut (2x the median distance, 4 refits) 2.86 mm.

## Shift-aware check (held-out frames in thirds by pixel size, i.e. the machine's depth/zoom setting)
| pixel size | frames | HC MAE, mm | gap to the other two thirds, mm |
|---|---|---|---|
{chr(10).join(f"| {k}: {v['pixel_mm'][0]}-{v['pixel_mm'][1]} mm | {v['n']} | {fmt(v['hc_mae_mm'])} | {v['gap_mm']:+.2f} |" for k, v in h['shift'].items())}

Validation and shift side by side: HC MAE {h['hc_mae_mm']['value']:.2f} mm on all held-out frames, the
worst third {max(v['hc_mae_mm']['value'] for v in h['shift'].values()):.2f} mm. Robustness to photometric
perturbations (below): at most 0.011 Dice. **Still short of the 2.0 mm target**: without the four
worst frames the mean is about 2.2 mm, so the remaining error is the outline of ordinary frames (the
model sees frames squashed to 256 x 176, 3 source pixels per input pixel); meeting the target needs
more than postprocessing. Fine-tuning these weights at 384 x 256 (4 epochs, one-cycle max lr 1e-3,
BCE weighted x5 within 3 px of the outline + soft Dice; 2496 s on 2 shared threads, threshold 0.55
chosen on training frames) did not help: HC MAE 2.76 mm (2.31-3.24), Dice 0.957, p50 1.76 / p90 6.57 /
p99 15.8 mm; not shipped. A longer schedule at that size from scratch (the recipe took 3848 s at
256 x 176) was not affordable here.

## Limits
- Standard transthalamic plane only; other planes, twins, or frames without a head give a
  meaningless ellipse (the model always outlines something).
- One centre (Radboud UMC, Nijmegen), two devices, one population; not validated elsewhere.
- Frames are squashed to {r['recipe']['input'].split(' to ')[-1].split(' (')[0]}: fine outline detail is lost.
- The CIs resample images; frames of one pregnancy are correlated, so they are somewhat narrow.
- Not a medical device.

## References
van den Heuvel TLA et al. Automated measurement of fetal head circumference using 2D ultrasound
images. PLoS ONE 2018;13(8):e0200412. Hadlock FP et al. Estimating fetal age: computer-assisted
analysis of multiple fetal growth parameters. Radiology 1984;152:497-501. Fitzgibbon A, Pilu M,
Fisher RB. Direct least square fitting of ellipses. IEEE PAMI 1999;21(5):476-480.

Weights SHA-256: `{r['weights_sha256']}`
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="smoke run: only this many training images")
    parser.add_argument("--evaluate-only", action="store_true", help="re-evaluate the shipped weights")
    args = parser.parse_args()
    record = reevaluate() if args.evaluate_only else train(args.epochs, args.seed, limit=args.limit)
    print({k: record["held_out"][k]["value"] for k in ("dice", "hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm")})


if __name__ == "__main__":
    main()
