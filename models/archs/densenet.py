"""DenseNet-121 (Huang et al. 2017) in plain torch, greyscale input, CAM-ready head."""
from __future__ import annotations

import torch
from torch import nn

from .cam import CAMClassifier


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
            nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True),
            nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def _transition(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.AvgPool2d(2))


class DenseNet(CAMClassifier):
    def __init__(self, in_channels: int = 1, num_classes: int = 14, growth: int = 32,
                 blocks=(6, 12, 24, 16), init_features: int = 64, bn_size: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False),
                                   nn.BatchNorm2d(init_features), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        ch = init_features
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(_DenseLayer(ch, growth, bn_size))
                ch += growth
            if i < len(blocks) - 1:
                layers.append(_transition(ch, ch // 2))
                ch //= 2
        layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
