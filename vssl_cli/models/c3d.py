"""A C3D-style backbone (Tran et al. 2015): eight 3x3x3 convolutions and max-pools.

The fully connected fc6/fc7 of the original are replaced by global average pooling, as
in the self-supervised video literature that uses C3D as a backbone (e.g. TCLR), so the
output is a feature map per stage plus a pooled vector like the ResNets'.
"""
from __future__ import annotations

from torch import nn

from vssl_cli.models.resnet import STAGES, StagedBackbone


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


class C3D(StagedBackbone):
    def __init__(self, width: float = 1.0, temporal_strides=(1, 2, 2, 2)):
        super().__init__()
        c = [max(4, int(round(n * width))) for n in (64, 128, 256, 512)]
        ts = temporal_strides
        self.stem = nn.Sequential(*_conv(3, c[0]), nn.MaxPool3d((1, 2, 2), (1, 2, 2)))
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv(c[0], c[1]), nn.MaxPool3d((ts[0], 2, 2), (ts[0], 2, 2))),
            nn.Sequential(*_conv(c[1], c[2]), *_conv(c[2], c[2]),
                          nn.MaxPool3d((ts[1], 2, 2), (ts[1], 2, 2))),
            nn.Sequential(*_conv(c[2], c[3]), *_conv(c[3], c[3]),
                          nn.MaxPool3d((ts[2], 2, 2), (ts[2], 2, 2))),
            nn.Sequential(*_conv(c[3], c[3]), *_conv(c[3], c[3]),
                          nn.MaxPool3d((ts[3], 1, 1), (ts[3], 1, 1))),
        ])
        self.stage_dims = dict(zip(STAGES, (c[1], c[2], c[3], c[3])))
        self.out_dim = c[3]
