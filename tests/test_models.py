"""Backbones: faithful to the reference architectures, and the shapes methods rely on."""
import pytest
import torch

from vssl_cli.errors import UsageProblem
from vssl_cli.models import STAGES, ProjectionHead, backbone_names, build_backbone

# torchvision's parameter counts for the same architectures without their classifier
# (r3d_18, r2plus1d_18, resnet18, resnet50): an independent check of each layout.
REFERENCE_PARAMS = {"r3d18": 33_166_272, "r2plus1d18": 31_300_125, "resnet18": 11_176_512,
                    "resnet50": 23_508_032}


@pytest.mark.parametrize("name,count", REFERENCE_PARAMS.items())
def test_layouts_match_reference_parameter_counts(name, count):
    assert sum(p.numel() for p in build_backbone(name).parameters()) == count


@pytest.mark.parametrize("name", [n for n in backbone_names() if n.endswith("-tiny")])
def test_tiny_backbones_give_stage_maps_and_pooled_vector(name):
    torch.manual_seed(0)
    model = build_backbone(name)
    feats = model(torch.randn(2, 3, 8, 32, 32))
    assert set(feats) == {*STAGES, "pooled"}
    for stage in STAGES:
        assert feats[stage].shape[:2] == (2, model.stage_dims[stage])
        assert feats[stage].dim() == 5
    assert feats["pooled"].shape == (2, model.out_dim)
    feats["pooled"].sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_frame_backbones_keep_frames_independent():
    torch.manual_seed(0)
    model = build_backbone("resnet18-tiny").eval()
    x = torch.randn(1, 3, 4, 32, 32)
    y = x.clone()
    y[:, :, 2] = torch.randn(1, 3, 32, 32)
    a, b = model(x)["res5"], model(y)["res5"]
    assert a.shape[2] == 4
    changed = [(a[:, :, t] - b[:, :, t]).abs().max().item() > 1e-6 for t in range(4)]
    assert changed == [False, False, True, False]


def test_temporal_strides_are_configurable():
    keep = build_backbone("r3d18-tiny", temporal_strides=(1, 1, 1, 1))
    assert keep(torch.randn(1, 3, 16, 32, 32))["res5"].shape[2] == 16
    default = build_backbone("r3d18-tiny")
    assert default(torch.randn(1, 3, 16, 32, 32))["res5"].shape[2] == 2


def test_unknown_backbone_and_head():
    with pytest.raises(UsageProblem, match="unknown backbone 'r4d'"):
        build_backbone("r4d")
    head = ProjectionHead(32, 16)
    assert head(torch.randn(4, 32)).shape == (4, 16)
