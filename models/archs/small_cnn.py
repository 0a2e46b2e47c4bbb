"""A small VGG-style CNN for 28x28 greyscale images, with a CAM-ready GAP head."""
from __future__ import annotations

from torch import nn

from .cam import CAMClassifier


def _block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
              nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool2d(2)] if pool else [])


class SmallCNN(CAMClassifier):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, widths=(32, 64, 128), dropout: float = 0.2):
        super().__init__()
        layers, cin = [], in_channels
        for i, w in enumerate(widths):
            layers += _block(cin, w, pool=i < len(widths) - 1)
            cin = w
        self.features = nn.Sequential(*layers, nn.Dropout2d(dropout))
        self.head = nn.Linear(cin, num_classes)
