"""Train ``pneumonia-cxr`` on PneumoniaMNIST (28x28 paediatric chest X-rays).

    python -m medexport.models.recipes.pneumonia_cxr [--epochs 30]

Splits: the official *train* split is divided 85/15 (stratified, seeded) into fit and tune;
the tune part picks the best epoch and the operating threshold (Youden's J); the
official *val* split is touched once, at the end, for the model card's numbers.
Class imbalance (90 % pneumonia in train) is handled with class-weighted cross-entropy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from medexport.engine.compare import binary_metrics
from medexport.engine.manifest import ImagePreprocess
from medexport.engine.preprocess import image_to_tensor

from ..data import shared_data
from ..registry import create_model, get_config
from .common import (fmt_metric, publish, save_weights, seed_everything, stratified_split, training_environment,
                     youden_threshold)

NAME = "pneumonia-cxr"
DATA_FILE = "images/pneumoniamnist_trainval.npz"


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images preprocessed exactly as the engine does, and labels (1 = pneumonia)."""
    data = np.load(shared_data() / DATA_FILE)
    spec = ImagePreprocess(**get_config(NAME).preprocess)
    images = np.concatenate([image_to_tensor(img.astype(np.float32) / 255.0, spec)[0]
                             for img in data[f"{split}_images"]])
    return images, data[f"{split}_labels"].reshape(-1).astype(np.int64)


def augment(x, generator):
    """Small affine jitter (±8°, ±2 px, 0.9-1.1 scale) plus contrast/brightness, on the batch."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * 2 * np.deg2rad(8)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 2 * (2 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    bias = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    return x * gain + bias


def predict(model, images: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(images[i:i + 512])) for i in range(0, len(images), 512)])
    return torch.softmax(logits, 1)[:, 1].numpy()


def train(epochs: int = 30, seed: int = 0, batch: int = 128, lr: float = 3e-3) -> dict:
    import torch

    seed_everything(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images, labels = load_split("train")
    fit_idx, tune_idx = stratified_split(labels, 0.15, seed)
    x_fit, y_fit = torch.from_numpy(images[fit_idx]), torch.from_numpy(labels[fit_idx])
    x_tune, y_tune = images[tune_idx], labels[tune_idx]

    model = create_model(NAME, pretrained=False).train()
    counts = np.bincount(labels[fit_idx], minlength=2)
    weights = torch.tensor(len(fit_idx) / (2 * counts), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(fit_idx) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, None, -1)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(fit_idx), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = loss_fn(model(augment(x_fit[idx], gen)), y_fit[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        tune_scores = predict(model, x_tune)
        from medexport.engine.compare import auroc

        tune_auc = auroc(y_tune, tune_scores)
        if tune_auc > best[0]:
            best = (tune_auc, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        print(f"epoch {epoch + 1:2d}/{epochs} loss {loss.item():.3f} tune AUROC {tune_auc:.4f} "
              f"({time.time() - start:.0f} s)", flush=True)

    model.load_state_dict(best[1])
    threshold = youden_threshold(y_tune, predict(model, x_tune))
    val_images, val_labels = load_split("val")
    val = binary_metrics(val_labels, predict(model, val_images), threshold, n_boot=2000)
    config = get_config(NAME)
    weights_sha = save_weights(model, config)
    record = {
        "model": NAME, "version": config.version, "thresholds": {"pneumonia": threshold},
        "threshold_rule": "Youden's J on the 15 % tune split of the official train split",
        "validation": val, "best_epoch": best[2] + 1, "tune_auroc": round(best[0], 4),
        "data": {"file": DATA_FILE, "fit": int(len(fit_idx)), "tune": int(len(tune_idx)),
                 "val": int(len(val_labels)), "val_positive": int(val_labels.sum())},
        "recipe": {"epochs": epochs, "seed": seed, "batch": batch, "lr": lr, "loss": "class-weighted CE, smoothing 0.05",
                   "augmentation": "affine ±8°/±2px/0.9-1.1, contrast ±15 %, brightness ±0.1"},
        "weights_sha256": weights_sha, "training_seconds": round(time.time() - start, 1),
        "environment": training_environment(),
    }
    return publish(config, record, model_card(config, record))


def model_card(config, r: dict) -> str:
    v = r["validation"]
    return f"""# Model card: {config.name} {config.version}

**Demo model, not a medical device. Not for diagnosis or treatment decisions.**

## What it does
Scores a frontal paediatric chest X-ray for pneumonia (labels `normal`, `pneumonia`; softmax).
The study is converted to display greyscale (DICOM Modality LUT, VOI window, MONOCHROME1
inverted), centre-cropped to a square, box-resampled to 28x28 and normalised (x-0.5)/0.5.

Intended use: {config.intended_use}

## Architecture
Small VGG-style CNN (3 stages of 2 conv3x3-BN-ReLU, widths 32/64/128), global average pooling,
linear head; 287 k parameters. The compiled graph also outputs class activation maps
(where the model looked; not a localisation).

## Training data
PneumoniaMNIST (MedMNIST v2; Yang et al., Scientific Data 2023) derived from Kermany et al.
2018, CC BY 4.0, file `{r['data']['file']}` of the project's shared data. Official train split
(3882 images, 90 % pneumonia) divided into fit ({r['data']['fit']}) and tune ({r['data']['tune']})
parts, stratified, seed {r['recipe']['seed']}. Class imbalance: class-weighted cross-entropy.
Recipe: `python -m {config.recipe}` ({r['recipe']['epochs']} epochs, AdamW + one-cycle,
{r['recipe']['augmentation']}); best epoch by tune AUROC: {r['best_epoch']}.
Trained in {r['training_seconds']:.0f} s on {r['environment']['threads']} CPU threads.

## Operating threshold
pneumonia score >= **{r['thresholds']['pneumonia']:.4f}**, chosen by {r['threshold_rule']}.
The validation split played no part in choosing it.

## Validation (official val split, n = {v['n']}, {v['n_positive']} pneumonia; bootstrap 95 % CI, 2000 resamples)
| metric | value |
|---|---|
| AUROC | {fmt_metric(v['auroc'])} |
| accuracy | {fmt_metric(v['accuracy'])} |
| sensitivity | {fmt_metric(v['sensitivity'])} |
| specificity | {fmt_metric(v['specificity'])} |

Published reference (ResNet-18 at 28 px on the *test* split, MedMNIST v2): AUC 0.944, ACC 0.854.
Our numbers are on the *val* split (the test split is held outside the project), so they are
not directly comparable.

## Limits
- 28x28 input: fine detail is lost; the model sees global opacity patterns only.
- Paediatric AP films from one centre (Guangzhou); adult films, other centres, lateral views,
  devices and lines are outside its training distribution.
- No check that the input is a chest X-ray at all: any greyscale image gets a score.
- Scores are not calibrated probabilities of disease.

Weights SHA-256: `{r['weights_sha256']}`
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    record = train(args.epochs, args.seed)
    v = record["validation"]
    print(f"val AUROC {fmt_metric(v['auroc'])}, accuracy {fmt_metric(v['accuracy'])}, "
          f"sensitivity {fmt_metric(v['sensitivity'])}, specificity {fmt_metric(v['specificity'])}")


if __name__ == "__main__":
    main()
