"""A compact anchor-free detector (CenterNet / TTFNet style) for colour microscopy.

A plain CNN to stride 32, a small feature pyramid back to stride 4 (8 with ``stride=8``), one
3 x 3 head. One output (N, classes + 4, H/stride, W/stride): per class a centre-heatmap logit, then log box distances (left,
top, right, bottom from the cell's centre, in units of the stride), as the engine's detection
task decodes them (engine/tasks/detection.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CenterDetector(nn.Module):
    def __init__(self, num_classes: int = 3, widths=(24, 48, 96, 128), neck: int = 48, prior: float = 0.05,
                 stride: int = 4):
        super().__init__()
        w2, w3, w4, w5 = widths
        self.num_classes = num_classes
        self.stride = stride  # 4: small cells (platelets) get their own cells on the grid
        # a 4 x 4 stride-4 patch stem: the 2-core CPU budget goes to the stride-8 and coarser levels
        self.s4 = nn.Sequential(nn.Conv2d(3, w2, 4, 4, bias=False), nn.BatchNorm2d(w2), nn.ReLU(inplace=True),
                                _conv(w2, w2))
        self.s8 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3), _conv(w3, w3))
        self.s16 = nn.Sequential(_conv(w3, w4, 2), _conv(w4, w4), _conv(w4, w4))
        self.s32 = nn.Sequential(_conv(w4, w5, 2), _conv(w5, w5))
        self.lat8, self.lat16, self.lat32 = (nn.Conv2d(w, neck, 1) for w in (w3, w4, w5))
        self.merge16 = _conv(neck, neck)
        self.merge8 = _conv(neck, neck)
        if stride == 4:
            self.lat4 = nn.Conv2d(w2, neck, 1)
            self.merge4 = _conv(neck, neck)
        self.head = _conv(neck, neck)
        self.out = nn.Conv2d(neck, num_classes + 4, 1)
        with torch.no_grad():
            self.out.bias[:num_classes] = -math.log((1 - prior) / prior)
            self.out.bias[num_classes:] = math.log(2.0)
            self.out.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c4 = self.s4(x)
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        c32 = self.s32(c16)
        p16 = self.merge16(self.lat16(c16) + F.interpolate(self.lat32(c32), scale_factor=2.0, mode="nearest"))
        p = self.merge8(self.lat8(c8) + F.interpolate(p16, scale_factor=2.0, mode="nearest"))
        if self.stride == 4:
            p = self.merge4(self.lat4(c4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return self.out(self.head(p))
