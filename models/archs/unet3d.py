"""A compact 3-D U-Net (Çiçek et al. 2016) for small volumes; one logit volume per class.

The 2-D U-Net (archs/unet.py) with 3-D layers: the same blocks, skips and forward pass."""
from __future__ import annotations

from torch import nn

from .unet import UNet


def _double(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                         nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class UNet3D(UNet):
    """Each side of the input must divide by 2 ** (levels - 1)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, widths=(8, 16, 32, 64)):
        nn.Module.__init__(self)
        self.down = nn.ModuleList(_double(cin, w) for cin, w in zip((in_channels, *widths[:-1]), widths))
        self.pool = nn.MaxPool3d(2)
        rev = widths[::-1]
        self.up = nn.ModuleList(nn.ConvTranspose3d(cin, w, 2, stride=2) for cin, w in zip(rev, rev[1:]))
        self.merge = nn.ModuleList(_double(2 * w, w) for w in rev[1:])
        self.out = nn.Conv3d(widths[0], num_classes, 1)
