"""Models that end in global average pooling + linear expose class activation maps."""
from __future__ import annotations

import torch
from torch import nn


class CAMClassifier(nn.Module):
    """Base: ``features(x)`` -> (N, C, h, w); ``head`` a Linear over the pooled features."""

    features: nn.Module
    head: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and per-class maps in one pass: CAM_k = sum_c w_kc F_c + b_k (no gradients)."""
        feats = self.features(x)
        logits = self.head(feats.mean(dim=(2, 3)))
        cam = torch.einsum("nchw,kc->nkhw", feats, self.head.weight) + self.head.bias[None, :, None, None]
        return logits, cam
