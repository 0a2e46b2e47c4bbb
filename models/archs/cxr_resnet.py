"""A compact residual CNN for 224-px greyscale radiographs, with a CAM-ready GAP head.

Built to train from scratch on a few CPU cores: two strided stem convolutions take 224 px
to 56 px at once, then four stages of one residual block each (the first conv of stages 2-4
strided), widths 24/48/96/192 by default; the last stage's 7x7 map (at 224 px) is what the
class activation maps show. Any input size divisible by 32 works (progressive resizing).
"""
from __future__ import annotations

import torch
from torch import nn

from .cam import CAMClassifier


def _conv_bn(cin: int, cout: int, stride: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU(inplace=True)] if relu else [])


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 strided conv-BN where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, stride), *_conv_bn(cout, cout, relu=False))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.short(x))


class CXRResNet(CAMClassifier):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, widths=(24, 48, 96, 192), dropout: float = 0.2):
        super().__init__()
        stem = widths[0]
        layers = [*_conv_bn(in_channels, stem // 2, stride=2), *_conv_bn(stem // 2, stem, stride=2)]
        cin = stem
        for i, w in enumerate(widths):
            layers.append(BasicBlock(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.features = nn.Sequential(*layers, nn.Dropout2d(dropout))
        self.head = nn.Linear(cin, num_classes)
