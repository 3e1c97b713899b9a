"""One ResNet family for every backbone the methods need.

- ``r3d18``: 3D ResNet-18 (Tran et al. 2018; torchvision's ``r3d_18`` layout).
- ``r2plus1d18``: R(2+1)D-18, each 3x3x3 conv factorised into 1x3x3 then 3x1x1 with the
  mid width that keeps the parameter count (torchvision's ``r2plus1d_18`` layout).
- ``mc3_18``: MC3-18, 3x3x3 convs in res2 and 1x3x3 (spatial only) in res3-res5, no
  temporal downsampling (torchvision's ``mc3_18`` layout).
- ``r3d18_tclr`` / ``r2plus1d18_tclr``: TCLR's networks (Dave et al. 2022,
  ``tclr_pretraining/model.py``): res5 keeps time (temporal stride 1) and its first conv
  is temporally dilated by 2 instead, so 16 frames end as 4 steps with the same weights.
- ``r3d50``: 3D ResNet-50 with bottlenecks (Hara et al. 2018).
- ``r3d50_slowonly``: the SlowOnly R-50 of SlowFast and TPN (``r50f8s8``): a 1x7x7
  stem, no temporal downsampling anywhere, temporal kernels 3 only in res4/res5. An 8-frame
  clip keeps its 8 steps to res5 (VTHCL's slow pathway).
- ``r3d50_cvrl``: CVRL's R3D-50 (Qian et al. 2021; tensorflow/models
  official/projects/video_ssl, also TeG's): a 5x7x7 stem conv with temporal stride 2 and
  no temporal pooling, no later temporal downsampling, and SlowFast-style bottlenecks whose
  first 1x1 conv is temporal (kernel 1 in res2/res3, 3 in res4/res5) before a 1x3x3 conv.
  16 frames end as 8 steps at res5.
- ``resnet18``/``resnet50``: 2D ResNets applied to every frame independently (TCE). They
  are the same code with temporal kernel and stride 1, which is exactly a per-frame 2D
  network (and BatchNorm over (B, T, H, W) equals BatchNorm2d over (B*T, H, W)).

Inputs are (B, 3, T, H, W). ``forward`` returns every stage's feature map, because several
methods contrast intermediate or temporal maps, plus the globally pooled vector.
Weights start random; ``vssl import`` (models/published.py) loads published ones.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels)


class Conv2Plus1D(nn.Sequential):
    """Spatial 1xkxk conv, BN, ReLU, then temporal kx1x1 conv (R(2+1)D)."""

    def __init__(self, cin: int, cout: int, mid: int, stride=(1, 1, 1), dilation: int = 1):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride[1], stride[2]), (0, 1, 1), bias=False),
            _bn(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride[0], 1, 1), (dilation, 0, 0),
                      (dilation, 1, 1), bias=False))


def _mid(cin: int, planes: int) -> int:
    """R(2+1)D mid width: as many parameters as the 3x3x3 conv it replaces. Computed once
    per block from its input width and used by both of its convs (as torchvision does)."""
    return (cin * planes * 27) // (cin * 9 + 3 * planes)


def _conv3x3(kind: str, cin: int, cout: int, stride, mid: int = 0, dilation: int = 1
             ) -> nn.Module:
    """``dilation``: temporal dilation (TCLR's res5), with the padding that keeps length."""
    if kind == "2plus1d":
        return Conv2Plus1D(cin, cout, mid, stride, dilation)
    kt = 1 if kind == "2d" else 3
    return nn.Conv3d(cin, cout, (kt, 3, 3), stride, (kt // 2 * dilation, 1, 1),
                     (dilation, 1, 1), bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, kind: str, cin: int, planes: int, stride, downsample: nn.Module | None,
                 dilation: int = 1):
        super().__init__()
        mid = _mid(cin, planes)
        self.conv1 = nn.Sequential(_conv3x3(kind, cin, planes, stride, mid, dilation),
                                   _bn(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv3x3(kind, planes, planes, (1, 1, 1), mid), _bn(planes))
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, kind: str, cin: int, planes: int, stride, downsample: nn.Module | None,
                 temporal_kernel: int = 0):
        """``temporal_kernel`` > 0: SlowFast/CVRL style, the first conv is kx1x1 and the
        second 1x3x3; 0: the 3x3x3 (or 2+1D) middle conv of ``kind``."""
        super().__init__()
        out = planes * self.expansion
        k = temporal_kernel
        self.conv1 = nn.Sequential(nn.Conv3d(cin, planes, (max(k, 1), 1, 1),
                                             padding=(max(k, 1) // 2, 0, 0), bias=False),
                                   _bn(planes), nn.ReLU(inplace=True))
        middle = (_conv3x3("2d", planes, planes, stride) if k else
                  _conv3x3(kind, planes, planes, stride, _mid(planes, planes)))
        self.conv2 = nn.Sequential(middle, _bn(planes), nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(nn.Conv3d(planes, out, 1, bias=False), _bn(out))
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    kind: str                       # "3d" | "2plus1d" | "2d"
    block: type
    layers: tuple[int, int, int, int]
    stem: str                       # "r3d" | "r2plus1d" | "r3d50" | "cvrl" | "slowonly" | "2d"
    temporal_strides: tuple[int, int, int, int] = (1, 2, 2, 2)
    # Bottlenecks only: the first conv's temporal kernel per stage (SlowFast/CVRL style);
    # None keeps the 3x3x3 middle conv.
    temporal_kernels: tuple[int, int, int, int] | None = None
    # Basic blocks only: the conv kind of each stage when they differ (MC3), and the
    # temporal dilation of each stage's first conv (TCLR's res5).
    stage_kinds: tuple[str, str, str, str] | None = None
    first_dilation: tuple[int, int, int, int] = (1, 1, 1, 1)

    @property
    def stem_temporal_stride(self) -> int:
        return {"r3d50": 2, "cvrl": 2}.get(self.stem, 1)

    def temporal_factors(self, strides: tuple[int, ...] | None = None) -> dict[str, int]:
        """How many input frames make one time step of each stage's map."""
        factor, out = self.stem_temporal_stride, {}
        for name, s in zip(STAGES, strides or self.temporal_strides):
            factor *= s
            out[name] = factor
        return out


SPECS = {
    "r3d18": ResNetSpec("3d", BasicBlock, (2, 2, 2, 2), "r3d"),
    "r2plus1d18": ResNetSpec("2plus1d", BasicBlock, (2, 2, 2, 2), "r2plus1d"),
    "mc3_18": ResNetSpec("3d", BasicBlock, (2, 2, 2, 2), "r3d", (1, 1, 1, 1),
                         stage_kinds=("3d", "2d", "2d", "2d")),
    "r3d18_tclr": ResNetSpec("3d", BasicBlock, (2, 2, 2, 2), "r3d", (1, 2, 2, 1),
                             first_dilation=(1, 1, 1, 2)),
    "r2plus1d18_tclr": ResNetSpec("2plus1d", BasicBlock, (2, 2, 2, 2), "r2plus1d",
                                  (1, 2, 2, 1), first_dilation=(1, 1, 1, 2)),
    "r3d50": ResNetSpec("3d", Bottleneck, (3, 4, 6, 3), "r3d50"),
    "r3d50_cvrl": ResNetSpec("3d", Bottleneck, (3, 4, 6, 3), "cvrl", (1, 1, 1, 1), (1, 1, 3, 3)),
    "r3d50_slowonly": ResNetSpec("3d", Bottleneck, (3, 4, 6, 3), "slowonly", (1, 1, 1, 1),
                                 (1, 1, 3, 3)),
    "resnet18": ResNetSpec("2d", BasicBlock, (2, 2, 2, 2), "2d", (1, 1, 1, 1)),
    "resnet50": ResNetSpec("2d", Bottleneck, (3, 4, 6, 3), "2d", (1, 1, 1, 1)),
}
STAGES = ("res2", "res3", "res4", "res5")


def _stem(kind: str, width: int) -> nn.Sequential:
    relu = nn.ReLU(inplace=True)
    if kind == "r3d":
        return nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                             _bn(width), relu)
    if kind == "r2plus1d":   # torchvision's R(2+1)D stem: 45 mid channels at full width
        mid = max(1, round(45 * width / 64))
        return nn.Sequential(nn.Conv3d(3, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
                             _bn(mid), nn.ReLU(inplace=True),
                             nn.Conv3d(mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
                             _bn(width), relu)
    if kind == "slowonly":   # SlowOnly/TPN: 1x7x7 conv, no temporal pooling
        return nn.Sequential(
            nn.Conv3d(3, width, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), _bn(width), relu,
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
    if kind == "cvrl":   # CVRL: 5x7x7 conv with temporal stride 2, no temporal pooling
        return nn.Sequential(
            nn.Conv3d(3, width, (5, 7, 7), (2, 2, 2), (2, 3, 3), bias=False), _bn(width), relu,
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
    kt = 7 if kind == "r3d50" else 1
    pool_t = 3 if kind == "r3d50" else 1
    return nn.Sequential(
        nn.Conv3d(3, width, (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), bias=False), _bn(width), relu,
        nn.MaxPool3d((pool_t, 3, 3), (1 if pool_t == 1 else 2, 2, 2), (pool_t // 2, 1, 1)))


class StagedBackbone(nn.Module):
    """A stem then four stages; returns {res2..res5: (B, C, T', H', W'), pooled: (B, C)}.

    Subclasses build ``stem``, ``stages`` (4 modules), ``stage_dims`` and ``out_dim``.
    """

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = {}
        x = self.stem(x)
        for name, stage in zip(STAGES, self.stages):
            x = stage(x)
            feats[name] = x
        feats["pooled"] = x.mean(dim=(2, 3, 4))
        return feats


class ResNet(StagedBackbone):
    """A ResNet backbone (see the module docstring for the variants)."""

    def __init__(self, spec: ResNetSpec, width: float = 1.0,
                 temporal_strides: tuple[int, int, int, int] | None = None):
        super().__init__()
        self.spec = spec
        base = max(4, int(round(64 * width)))
        strides = temporal_strides or spec.temporal_strides
        self.stem = _stem(spec.stem, base)
        cin, stages, self.stage_dims = base, [], {}
        for i, (count, t_stride) in enumerate(zip(spec.layers, strides)):
            planes = base * 2 ** i
            s_stride = 1 if i == 0 else 2
            stride = (t_stride, s_stride, s_stride)
            blocks = []
            for b in range(count):
                down = None
                out = planes * spec.block.expansion
                if b == 0 and (stride != (1, 1, 1) or cin != out):
                    down = nn.Sequential(nn.Conv3d(cin, out, 1, stride, bias=False), _bn(out))
                extra = {"temporal_kernel": spec.temporal_kernels[i]} \
                    if spec.temporal_kernels else {}
                if b == 0 and spec.first_dilation[i] != 1:
                    extra["dilation"] = spec.first_dilation[i]
                kind = spec.stage_kinds[i] if spec.stage_kinds else spec.kind
                blocks.append(spec.block(kind, cin, planes, stride if b == 0 else (1, 1, 1),
                                         down, **extra))
                cin = out
            stages.append(nn.Sequential(*blocks))
            self.stage_dims[STAGES[i]] = cin
        self.stages = nn.ModuleList(stages)
        self.out_dim = cin
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
