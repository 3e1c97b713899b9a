"""`vssl import`: published encoders, checked against their authors' own model code.

No network: each reference network is built here with random weights and non-trivial
BatchNorm statistics (tests/reference_models.py), saved the way its authors save it,
imported, and compared feature for feature with the original on the same clip.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import manifest_of, run_vssl, vssl_in_process
from reference_models import pytorchvideo_hub_resnet, randomise_batchnorm, torchvision_video

TOLERANCE = 1e-5          # float32, eval mode (the bar for torchvision)


def _import(weights, out, fmt, *extra):
    code, stdout, stderr = vssl_in_process("-q", "import", str(weights), "-o", str(out),
                                           "--format", fmt, *map(str, extra))
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    return out


def _vssl_encoder(artifact):
    from vssl_cli.evaluate.artifact import open_model
    return open_model(str(artifact)).encoder().eval()


def _clip(frames=16, size=112, seed=0):
    return torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tv():
    return torchvision_video()


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18", "mc3_18"])
def test_torchvision_features_equal(tv, arch, tmp_path):
    torch.manual_seed(1)
    net = randomise_batchnorm(getattr(tv, arch)())
    torch.save(net.state_dict(), tmp_path / f"{arch}.pth")
    art = _import(tmp_path / f"{arch}.pth", tmp_path / "model", f"torchvision:{arch}")
    net.fc = nn.Identity()
    x = _clip()
    with torch.no_grad():
        ours, theirs = _vssl_encoder(art)(x)["pooled"], net(x)
    assert (ours - theirs).abs().max().item() <= TOLERANCE
    spec = manifest_of(art)["outputs"]["encoder"]
    assert spec["mean"] == [0.43216, 0.394666, 0.37645] and spec["channels"] == "rgb"
    assert spec["std"] == [0.22803, 0.22145, 0.216989]
    assert spec["size"] == 112 and spec["crop_fraction"] == pytest.approx(112 / 128)
    imported = manifest_of(art)["outputs"]["imported"]
    assert imported["key_map"]["dropped"] == {"fc.*": 2}
    assert imported["format"] == f"torchvision:{arch}" and len(imported["sha256"]) == 64

    if arch == "r3d_18":       # the exported TorchScript computes the same features
        code, out, err = vssl_in_process("-q", "export", str(art), "--format", "torchscript",
                                         "-o", str(tmp_path / "ts"))
        assert code == 0, err
        scripted = torch.jit.load(str(tmp_path / "ts" / "encoder.ts"))
        with torch.no_grad():
            assert (scripted(x) - theirs).abs().max().item() <= TOLERANCE


def _tclr_network(tv):
    """TCLR's tclr_pretraining/model.py: torchvision's r3d_18 without fc, res5's first conv
    temporally dilated instead of strided, in Sequential(backbone, mlp)."""
    backbone = tv.r3d_18()
    del backbone.fc
    backbone.layer4[0].conv1[0] = nn.Conv3d(256, 512, (3, 3, 3), (1, 2, 2), (2, 1, 1),
                                            dilation=(2, 1, 1), bias=False)
    backbone.layer4[0].downsample[0] = nn.Conv3d(256, 512, 1, (1, 2, 2), bias=False)

    class MLP(nn.Module):          # mlp.py's parameters (its forward is not needed here)
        def __init__(self):
            super().__init__()
            self.fc1, self.bn1 = nn.Linear(512, 512), nn.BatchNorm1d(512)
            self.bn2, self.fc2 = nn.BatchNorm1d(128), nn.Linear(512, 128, bias=False)

    return nn.Sequential(backbone, MLP())


def _tclr_backbone_features(backbone, x):
    """r3d.py's forward: the stages, then an average pool that keeps time; vssl's pooled
    vector is its mean over time."""
    for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
        x = getattr(backbone, name)(x)
    return x.mean(dim=(3, 4)).mean(dim=2)


def _tclr_checkpoint(model, path):
    """As train_gen_all_step.py saves it: DataParallel's state dict, the optimiser, the
    learning rate and the pickled AMP GradScaler."""
    from torch.amp.grad_scaler import _refresh_per_optimizer_state
    wrapped = nn.DataParallel(model)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    scaler.__dict__.update(_init_scale=65536.0, _growth_factor=2.0, _backoff_factor=0.5,
                           _growth_interval=2000, _per_optimizer_states=collections.defaultdict(
                               _refresh_per_optimizer_state))
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=1e-3)
    torch.save({"epoch": 11, "state_dict": wrapped.state_dict(),
                "optimizer": optimizer.state_dict(), "learning_rate": 1e-3,
                "amp_scaler": scaler}, path)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_tclr_checkpoint_features_equal_in_bgr(tv, tmp_path):
    torch.manual_seed(2)
    model = randomise_batchnorm(_tclr_network(tv))
    _tclr_checkpoint(model, tmp_path / "model_best_e11_loss_9.pth")
    assert any(k.startswith("module.1.") for k in torch.load(
        tmp_path / "model_best_e11_loss_9.pth", weights_only=False)["state_dict"])
    art = _import(tmp_path / "model_best_e11_loss_9.pth", tmp_path / "tclr", "tclr:r3d_18")
    x = torch.rand(2, 3, 16, 112, 112)      # BGR in [0, 1], no mean/std, as they feed it
    with torch.no_grad():
        ours, theirs = _vssl_encoder(art)(x)["pooled"], _tclr_backbone_features(model[0], x)
    assert (ours - theirs).abs().max().item() <= TOLERANCE
    m = manifest_of(art)
    spec = m["outputs"]["encoder"]
    assert (spec["backbone"], spec["channels"], spec["mean"], spec["std"]) == (
        "r3d18_tclr", "bgr", [0.0] * 3, [1.0] * 3)
    key_map = m["outputs"]["imported"]["key_map"]
    assert key_map["dropped"] == {"1.*": 5 + 2 * 5 - 2}     # fc1 (2), bn1/bn2 (5 each), fc2
    assert "module. prefix stripped" in key_map["rules"]
    assert "state dict under 'state_dict'" in key_map["rules"]


def test_slow_r50_matches_pytorchvideo(tmp_path):
    hub = pytorchvideo_hub_resnet()
    torch.manual_seed(3)
    net = randomise_batchnorm(hub.slow_r50(pretrained=False))
    torch.save({"model_state": net.state_dict()}, tmp_path / "SLOW_8x8_R50.pyth")
    art = _import(tmp_path / "SLOW_8x8_R50.pyth", tmp_path / "slow", "pytorchvideo:slow_r50")
    net.blocks[5].proj, net.blocks[5].dropout = nn.Identity(), nn.Identity()
    x = _clip(8, 224)
    with torch.no_grad():
        ours, theirs = _vssl_encoder(art)(x)["pooled"], net(x)
    # Their head averages with AvgPool3d((8, 7, 7)), vssl with a mean: the same sum in
    # another order, so equal up to float32 rounding of values in the thousands.
    assert (ours - theirs).abs().max().item() <= TOLERANCE * theirs.abs().max().item()
    spec = manifest_of(art)["outputs"]["encoder"]
    assert (spec["clip_len"], spec["stride"], spec["size"]) == (8, 8, 256)


def test_input_convention_reaches_the_encoder(tmp_path):
    """probe/retrieve/finetune/export preprocess as the manifest says: a flat-colour clip
    comes out as ((pixel / 255 * pixel_max) - mean) / std in the encoder's channel order;
    a manifest without the newer fields keeps the old behaviour (RGB, [0, 1])."""
    from vssl_cli.evaluate.features import preprocess
    clip = torch.empty(1, 3, 2, 24, 32, dtype=torch.uint8)
    for c, v in enumerate((200, 100, 50)):          # R, G, B
        clip[:, c] = v
    hw = torch.tensor([[24, 32]])
    base = {"size": 16, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 0.125]}
    cases = [({}, (200, 100, 50), 1), ({"channels": "bgr"}, (50, 100, 200), 1),
             ({"channels": "rgb", "pixel_max": 255}, (200, 100, 50), 255)]
    for extra, order, scale in cases:
        out = preprocess(clip, hw, {**base, **extra})
        want = [(v / 255 * scale - m) / s for v, m, s in zip(order, base["mean"], base["std"])]
        got = [out[0, c].mean().item() for c in range(3)]
        assert got == pytest.approx(want, rel=1e-5), extra


def test_crop_fraction_takes_the_centre(tmp_path):
    from vssl_cli.evaluate.features import centre_params
    boxes = centre_params(1, torch.tensor([[120, 160]]), "cpu", fraction=0.8).boxes[0]
    # a 96x96 square in the middle of 120x160: x 32..128, y 12..108
    assert boxes.tolist() == pytest.approx([32 / 160, 12 / 120, 128 / 160, 108 / 120])
    ends = centre_params(1, torch.tensor([[120, 160]]), "cpu", 0.0, 0.8).boxes[0]
    assert ends.tolist() == pytest.approx([0, 12 / 120, 96 / 160, 108 / 120])


# ---- protocols on an imported encoder ---------------------------------------------------

@pytest.fixture(scope="module")
def small_import(tmp_path_factory):
    """torchvision's r3d_18, imported with clips small enough for CPU tests."""
    tv = torchvision_video()
    root = tmp_path_factory.mktemp("imported")
    torch.manual_seed(4)
    torch.save(randomise_batchnorm(tv.r3d_18()).state_dict(), root / "r3d.pth")
    return _import(root / "r3d.pth", root / "model", "torchvision:r3d_18", "--size", "32",
                   "--clip-len", "4", "--stride", "2")


def test_probe_retrieve_finetune_run_on_imported(small_import, tiny_frames, tmp_path):
    for args in (["probe", small_import, "--data", tiny_frames, "--clips", "1"],
                 ["retrieve", small_import, "--data", tiny_frames, "--clips", "1"]):
        code, out, err = vssl_in_process("-q", *map(str, args), "-o", str(tmp_path / args[0]))
        assert code == 0, err
        m = manifest_of(out.strip())
        assert m["inputs"][0]["weights"] == manifest_of(small_import)["outputs"]["encoder"][
            "sha256"]
        assert m["metrics"]["train_overlap"] == "unknown"    # imported: not said
    code, out, err = vssl_in_process(
        "-q", "finetune", str(small_import), "--data", str(tiny_frames), "-o",
        str(tmp_path / "ft"), "--max-steps", "2", "--batch-size", "4", "-j", "0",
        "--test-clips", "1")
    assert code == 0, err
    ft = manifest_of(tmp_path / "ft")
    assert ft["config"]["aug"]["mean"] == [0.43216, 0.394666, 0.37645]
    assert 0 <= ft["metrics"]["test_top1"] <= 1


def test_pretrain_init_starts_from_the_weights(tmp_path, tiny_frames):
    from vssl_cli.models import build_backbone
    torch.manual_seed(5)
    state = build_backbone("r3d18-tiny").state_dict()
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "w.pt")
    art = _import(tmp_path / "w.pt", tmp_path / "init", "vssl", "--backbone", "r3d18-tiny",
                  "--channels", "bgr", "--mean", "0,0,0", "--std", "1,1,1")
    common = ["--epochs", "0", "--batch-size", "4", "-j", "0", "--set", "aug.size=32",
              "--set", "clip_len=4", "--set", "stride=2"]
    code, out, err = vssl_in_process("-q", "pretrain", str(tiny_frames), "-o",
                                     str(tmp_path / "run"), "--init", str(art), *common)
    assert code == 0, err
    m = manifest_of(tmp_path / "run")
    assert m["config"]["backbone"] == "r3d18-tiny" and m["config"]["aug"]["channels"] == "bgr"
    assert m["inputs"][1]["weights"] == manifest_of(art)["outputs"]["encoder"]["sha256"]
    trained = torch.load(tmp_path / "run" / "encoder.pt", weights_only=True)
    assert all(torch.equal(trained[k], v) for k, v in state.items())    # 0 steps: the init
    # A backbone that cannot take the weights is refused before anything is written.
    code, _, err = vssl_in_process("-q", "pretrain", str(tiny_frames), "-o",
                                   str(tmp_path / "r2"), "--init", str(art), "--backbone",
                                   "r2plus1d18-tiny", *common)
    assert code == 2 and "holds a r3d18-tiny encoder" in err and not (tmp_path / "r2").exists()


def test_cached_evaluation_follows_the_weights(small_import, tiny_frames, tmp_path):
    """An evaluation's id includes the weights' digest: re-importing other weights at the
    same path recomputes it; a replaced encoder.pt is refused."""
    import shutil
    model = tmp_path / "model"
    shutil.copytree(small_import, model)
    probe = ["-q", "probe", str(model), "--data", str(tiny_frames), "--clips", "1", "-o",
             str(tmp_path / "p")]
    assert vssl_in_process(*probe)[0] == 0
    first = manifest_of(tmp_path / "p")["id"]
    assert vssl_in_process(*probe)[0] == 0 and manifest_of(tmp_path / "p")["id"] == first
    torch.manual_seed(6)
    tv = torchvision_video()
    torch.save(randomise_batchnorm(tv.r3d_18(), seed=1).state_dict(), tmp_path / "other.pth")
    _import(tmp_path / "other.pth", model, "torchvision:r3d_18", "--size", "32",
            "--clip-len", "4", "--stride", "2")
    assert vssl_in_process(*probe)[0] == 0
    assert manifest_of(tmp_path / "p")["id"] != first
    (model / "encoder.pt").write_bytes((tmp_path / "other.pth").read_bytes())
    code, _, err = vssl_in_process(*probe)
    assert code == 1 and "not the ones the manifest records" in err


# ---- what is refused ---------------------------------------------------------------------

def _refused(tmp_path, weights, fmt, *extra, code=1):
    out = tmp_path / "out"
    got, stdout, err = vssl_in_process("import", str(weights), "-o", str(out), "--format",
                                       fmt, *extra)
    assert got == code, err
    assert stdout == "" and not out.exists()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "internal error" not in err, err
    return lines[0]


def test_weights_that_do_not_fit_name_the_keys(tv, tmp_path):
    torch.save(tv.r2plus1d_18().state_dict(), tmp_path / "r21d.pth")
    line = _refused(tmp_path, tmp_path / "r21d.pth", "torchvision:r3d_18")
    assert "do not fit torchvision:r3d_18" in line and "unexpected stem.3.weight" in line
    assert "in the file" in line and "expected" in line
    state = tv.r3d_18().state_dict()
    del state["layer4.1.conv2.1.running_var"]
    torch.save({"model": state}, tmp_path / "short.pth")
    line = _refused(tmp_path, tmp_path / "short.pth", "torchvision:r3d_18")
    assert "missing stages.3.1.conv2.1.running_var" in line
    state = tv.r3d_18().state_dict()
    state["stem.0.weight"][0, 0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    assert "NaN" in _refused(tmp_path, tmp_path / "nan.pth", "torchvision:r3d_18")


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    assert "not a PyTorch or safetensors checkpoint" in _refused(
        tmp_path, tmp_path / "notes.txt", "torchvision:r3d_18")
    torch.save({"stem.0.weight": torch.ones(3)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    assert "damaged or truncated" in _refused(tmp_path, tmp_path / "cut.pth",
                                              "torchvision:r3d_18")
    (tmp_path / "empty.pth").write_bytes(b"")
    assert "empty" in _refused(tmp_path, tmp_path / "empty.pth", "torchvision:r3d_18")
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "nostate.pth")
    assert "no state dict" in _refused(tmp_path, tmp_path / "nostate.pth",
                                       "torchvision:r3d_18")
    assert "needs --backbone" in _refused(tmp_path, tmp_path / "full.pth", "vssl", code=2)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"stem.0.weight": torch.ones(1)}, "extra": _Payload(marker)},
               tmp_path / "evil.pth")
    line = _refused(tmp_path, tmp_path / "evil.pth", "tclr:r3d_18")
    assert "could run code" in line and "weights_only=False" in line
    assert not marker.exists()


def test_unknown_format_lists_the_known(tmp_path):
    torch.save({}, tmp_path / "w.pth")
    proc = run_vssl("import", tmp_path / "w.pth", "-o", tmp_path / "o", "--format", "timm:x")
    assert proc.returncode == 2 and "torchvision:r3d_18" in proc.stderr
    assert "tclr:r3d_18" in proc.stderr and not (tmp_path / "o").exists()


def test_safetensors_from_vssl_export_round_trips(random_run, tmp_path):
    """`vssl export --format safetensors` names backbone and input in its metadata; the
    import needs nothing else and gives the same encoder."""
    code, _, err = vssl_in_process("-q", "export", str(random_run), "--format", "safetensors",
                                   "-o", str(tmp_path / "st"))
    assert code == 0, err
    art = _import(tmp_path / "st" / "encoder.safetensors", tmp_path / "back", "safetensors")
    a, b = _vssl_encoder(random_run), _vssl_encoder(art)
    x = _clip(4, 32)
    with torch.no_grad():
        assert torch.equal(a(x)["pooled"], b(x)["pooled"])
    spec = manifest_of(art)["outputs"]["encoder"]
    assert spec["backbone"] == "r3d18-tiny" and (spec["clip_len"], spec["size"]) == (4, 32)


def test_readme_lists_every_format():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    from vssl_cli.models.published import FORMATS
    for name in FORMATS:
        assert f"`{name}`" in readme, name
