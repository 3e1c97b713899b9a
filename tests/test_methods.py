"""Pretraining methods: samplers, losses against direct recomputation, gradient flow."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssl_cli.data.augment import AugConfig, apply
from vssl_cli.methods.simclr import SimCLR, SimCLRParams
from vssl_cli.methods.tclr import TCLR, TCLRParams, global_local_loss, local_local_loss, tclr_views
from vssl_cli.methods.ctrlaug import (CtrlAug, CtrlAugParams, GradReverse, correspondence,
                                      local_global_views, mine_bound)
from vssl_cli.methods.tce import (TCE, TCEParams, mine_negatives, mining_threshold, nce_loss,
                                  nearby_pair)
from vssl_cli.methods.teg import TeG, TeGParams, fine_grained_loss, long_short_views
from vssl_cli.methods.vthcl import VTHCL, VTHCLParams, bank_contrast, tempo_views


def test_tclr_global_clip_spans_exactly_the_local_segments():
    rng = np.random.default_rng(0)
    for n in (40, 64, 100):
        glob, *local = tclr_views(n, 8, 2, 4, rng)
        assert len(local) == 4 and all(len(v) == 8 for v in [glob, *local])
        assert all(0 <= v.min() and v.max() < n for v in [glob, *local])
        if n >= 64:                                      # room: no looping
            starts = [v[0] for v in local]
            assert all(b - a == 16 for a, b in zip(starts, starts[1:]))  # consecutive segments
            assert glob[0] == local[0][0] and glob[-1] <= local[-1][-1]
            assert all(glob[2 * k] == local[k][0] for k in range(4))     # part k starts clip k


def _nce(a, cands, pos, tau):
    sims = [float(F.cosine_similarity(a, c, dim=0)) / tau for c in cands]
    return -sims[pos] + math.log(sum(math.exp(s) for s in sims))


def test_local_local_loss_matches_a_loop():
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    want = 0.0
    for b in range(3):
        views = list(z1[b]) + list(z2[b])
        total = 0.0
        for i in range(8):
            others = [views[j] for j in range(8) if j != i]
            partner = (i + 4) % 8
            total += _nce(views[i], others, partner if partner < i else partner - 1, 0.1)
        want += total / 8
    assert abs(float(local_local_loss(z1, z2, 0.1)) - want / 3) < 1e-4


def test_global_local_loss_matches_a_loop_and_knows_aligned_parts():
    torch.manual_seed(1)
    parts, local = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    want = 0.0
    for b in range(2):
        for k in range(4):
            want += _nce(parts[b, k], list(local[b]), k, 0.1) / 4
            want += _nce(local[b, k], list(parts[b]), k, 0.1) / 4
    assert abs(float(global_local_loss(parts, local, 0.1)) - want / 2) < 1e-4
    eye = torch.eye(4).repeat(2, 1, 1)
    assert float(global_local_loss(eye, eye, 0.1)) < 1e-3            # identical, orthogonal
    assert float(global_local_loss(eye, eye.flip(1), 0.1)) > 10


def _batch(views, b=4, hw=40):
    return {"clips": [torch.randint(0, 255, (b, 3, len(v), hw, hw), dtype=torch.uint8)
                      for v in views],
            "valid_hw": torch.tensor([[hw, hw]] * b), "labels": torch.zeros(b, dtype=torch.long),
            "index": torch.arange(b), "indices": [torch.as_tensor(v).repeat(b, 1) for v in views]}


def _grads_reach_every_parameter(method):
    views = method.views(64, np.random.default_rng(0))
    loss, parts = method(_batch(views), torch.Generator().manual_seed(0))
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None]
    assert not missing, missing
    return parts


def test_simclr_and_tclr_send_gradients_to_encoder_and_heads():
    aug = AugConfig(size=32)
    torch.manual_seed(0)
    _grads_reach_every_parameter(SimCLR(SimCLRParams(clip_len=4), "r3d18-tiny", aug))
    parts = _grads_reach_every_parameter(
        TCLR(TCLRParams(clip_len=8, stride=1, n_local=2), "r3d18-tiny", aug))
    assert set(parts) == {"ic", "ll", "gl"}


def test_simclr_can_keep_time_like_tclrs_encoder():
    """SimCLR on TCLR's temporal strides (the ablation that tells TCLR's encoder from its
    terms): the last stage keeps a step per 4 frames; the default is the backbone's own."""
    aug = AugConfig(size=32)
    clip = torch.zeros(1, 3, 8, 32, 32)
    kept = SimCLR(SimCLRParams(clip_len=8, temporal_strides=(1, 2, 2, 1)), "r3d18-tiny", aug)
    plain = SimCLR(SimCLRParams(clip_len=8), "r3d18-tiny", aug)
    assert kept.encoder(clip)["res5"].shape[2] == 2
    assert plain.encoder(clip)["res5"].shape[2] == 1
    assert kept.encoder_spec()["temporal_strides"] == [1, 2, 2, 1]
    assert plain.encoder_spec()["temporal_strides"] is None


def test_tclr_losses_switch_off():
    torch.manual_seed(0)
    method = TCLR(TCLRParams(clip_len=8, n_local=2, w_ic=0, w_gl=0), "r3d18-tiny",
                  AugConfig(size=32))
    views = method.views(64, np.random.default_rng(0))
    _, parts = method(_batch(views), None)
    assert set(parts) == {"ll"}


def test_vthcl_slow_and_fast_clips_cover_the_same_window():
    rng = np.random.default_rng(0)
    for n in (30, 64, 200):
        slow, fast = tempo_views(n, 8, 8, 2, rng)
        assert len(slow) == 8 and len(fast) == 16
        assert all(0 <= v.min() and v.max() < n for v in (slow, fast))
        if n >= 64:
            assert (fast[::2] == slow).all() and (np.diff(fast) == 4).all()


def test_bank_contrast_matches_a_loop_with_the_whole_bank_and_with_sampled_negatives():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 8), dim=1)
    bank = F.normalize(torch.randn(10, 8), dim=1)
    index = torch.tensor([4, 0, 7])
    want = sum(_nce(q[i], list(bank), int(index[i]), 0.07) for i in range(3)) / 3
    assert abs(float(bank_contrast(q, bank, index, 16384, 0.07, None)) - want) < 1e-4
    current = F.normalize(torch.randn(3, 8), dim=1)       # positive from the batch
    want = sum(_nce(q[i], [current[i]] + [bank[j] for j in range(10) if j != index[i]], 0, 0.07)
               for i in range(3)) / 3
    assert abs(float(bank_contrast(q, bank, index, 99, 0.07, None, current)) - want) < 1e-4
    draw = torch.randint(0, 10, (3, 5), generator=torch.Generator().manual_seed(3))
    want = sum(_nce(q[i], [bank[index[i]]] + [bank[j] for j in draw[i] if j != index[i]], 0,
                    0.07) for i in range(3)) / 3
    got = bank_contrast(q, bank, index, 5, 0.07, torch.Generator().manual_seed(3))
    assert abs(float(got) - want) < 1e-4


def test_bank_contrast_known_values():
    bank = torch.eye(6)
    index = torch.arange(6)
    assert float(bank_contrast(bank, bank, index, 100, 0.07, None)) < 1e-4     # own row
    assert float(bank_contrast(bank.roll(1, 0), bank, index, 100, 0.07, None)) > 10


def _vthcl(**kw):
    torch.manual_seed(0)
    method = VTHCL(VTHCLParams(clip_len=4, stride=4, **kw), "r3d18-tiny", AugConfig(size=32))
    method.attach_dataset(6)
    return method


def test_vthcl_sends_gradients_to_both_encoders_and_every_level_head():
    method = _vthcl()
    parts = _grads_reach_every_parameter(method)
    assert set(parts) == {f"{q}_{lv}" for q in "fs" for lv in ("res3", "res4", "res5")}
    assert method.fast_encoder.out_dim == method.encoder.out_dim // 2
    assert "bank_slow_res5" in method.state_dict()           # checkpoints carry the banks


def test_vthcl_slow_and_fast_share_one_augmentation_and_keep_time():
    """Sec. 5.3: at alpha = 1 both encoders see exactly the same input; the pathways keep
    every time step to res5 (TPN's r50f8s8 has no temporal downsampling)."""
    torch.manual_seed(0)
    method = VTHCL(VTHCLParams(clip_len=4, stride=2, alpha=1), "r3d18-tiny", AugConfig(size=32))
    method.attach_dataset(6)
    views = method.views(64, np.random.default_rng(0))
    assert np.array_equal(views[0], views[1])            # alpha 1: the same frames
    batch = _batch(views)
    batch["clips"][1] = batch["clips"][0].clone()
    gen = torch.Generator().manual_seed(0)
    slow, drawn = method.augmented(batch["clips"][0], batch, gen)
    fast = apply(batch["clips"][1], drawn, method.aug, batch["valid_hw"])
    assert torch.equal(slow, fast)
    maps = method.encoder(slow)
    assert maps["res5"].shape[2] == slow.shape[2]


def test_vthcl_updates_its_banks_as_an_ema_of_the_batch():
    method = _vthcl(levels=("res5",), level_weights=(1.0,), bank_momentum=0.5).eval()
    before = method.bank_fast_res5.clone()
    batch = _batch(method.views(64, np.random.default_rng(0)))
    method(batch, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)     # replay the augmentation both clips share
    _, drawn = method.augmented(batch["clips"][0], batch, gen)
    fast = apply(batch["clips"][1], drawn, method.aug, batch["valid_hw"])
    z = method.embed(method.fast_encoder(fast), "fast")["res5"]
    want = F.normalize(0.5 * before[:4] + 0.5 * z, dim=1)
    assert torch.allclose(method.bank_fast_res5[:4], want, atol=1e-5)
    assert torch.equal(method.bank_fast_res5[4:], before[4:])          # untouched rows


def test_vthcl_rejects_bad_levels_and_tempo():
    import pytest
    with pytest.raises(ValueError, match="levels"):
        _vthcl(levels=("res9",), level_weights=(1.0,))
    with pytest.raises(ValueError, match="multiple of alpha"):
        VTHCL(VTHCLParams(stride=3, alpha=2), "r3d18-tiny", AugConfig(size=32))


def test_vthcl_correspondence_map_is_a_cosine_map_over_the_slow_clip():
    method = _vthcl().eval()
    slow = torch.rand(2, 3, 4, 32, 32)
    fast = torch.rand(2, 3, 8, 32, 32)
    icm = method.correspondence_map(slow, fast)
    t = method.encoder(slow)["res5"].shape[2:]
    assert icm.shape == (2, *t) and icm.abs().max() <= 1 + 1e-5


# --- TeG -----------------------------------------------------------------------------------

def test_teg_short_clip_lies_inside_the_long_one_on_a_step_boundary():
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(50):
        short, long = long_short_views(100, 16, 32, 2, 4, rng)
        assert len(short) == 16 and len(long) == 32 and long.max() < 100
        k, rest = divmod(int(short[0] - long[0]), 2 * 4)
        assert rest == 0 and 0 <= k <= 4
        assert (short == long[4 * k: 4 * k + 16]).all()           # same frames, same rate
        offsets.add(k)
    assert offsets == {0, 1, 2, 3, 4}
    short, long = long_short_views(40, 16, 32, 2, 4, rng)        # too short: no offset
    assert short[0] == long[0] == 0


def test_teg_fine_grained_loss_matches_a_loop_and_known_values():
    torch.manual_seed(0)
    short, long = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    offset = torch.tensor([0, 2])
    want = 0.0
    for b in range(2):
        for j in range(3):
            k = j + int(offset[b])
            want += _nce(short[b, j], list(long[b]), k, 0.1) / 3
            want += _nce(long[b, k], list(short[b]), j, 0.1) / 3
    assert abs(float(fine_grained_loss(short, long, offset, 0.1)) - want / 4) < 1e-4
    eye = torch.eye(5)[None]
    assert float(fine_grained_loss(eye[:, 1:4], eye, torch.tensor([1]), 0.1)) < 1e-3
    assert float(fine_grained_loss(eye[:, 1:4], eye, torch.tensor([0]), 0.1)) > 5


def test_teg_alpha_mixes_the_two_spaces_and_gradients_reach_both_heads():
    aug = AugConfig(size=32)
    torch.manual_seed(0)
    small = dict(clip_len=8, long_len=16)
    parts = _grads_reach_every_parameter(TeG(TeGParams(alpha=0.5, **small), "r3d18-tiny", aug))
    assert set(parts) == {"coarse", "fine"}
    views = TeG(TeGParams(**small), "r3d18-tiny", aug).views(64, np.random.default_rng(0))
    for alpha, want in ((0.0, {"coarse"}), (1.0, {"fine"})):
        method = TeG(TeGParams(alpha=alpha, **small), "r3d18-tiny", aug)
        loss, parts = method(_batch(views), None)
        assert set(parts) == want
        if alpha == 0:
            assert abs(float(loss.detach()) - parts["coarse"]) < 1e-5


# --- TCE -----------------------------------------------------------------------------------

def test_tce_positive_is_a_different_frame_within_the_window():
    rng = np.random.default_rng(0)
    for n in (2, 10, 300):
        for _ in range(50):
            (a,), (b,) = nearby_pair(n, 8, rng)
            assert a != b and abs(a - b) <= 8 and 0 <= min(a, b) and max(a, b) < n


def test_tce_mining_threshold_rises_from_low_to_high():
    values = [mining_threshold(p, -1, 1, 5) for p in np.linspace(0, 1, 11)]
    assert values[0] == -1 and all(b > a for a, b in zip(values, values[1:]))
    assert 0.98 < values[-1] < 1


def test_tce_mines_the_hardest_negatives_below_the_threshold():
    bank = F.normalize(torch.randn(50, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    anchor = bank[:2] + 0.01
    own = torch.tensor([0, 1])
    sims = F.normalize(anchor, dim=1) @ bank.T
    neg = mine_negatives(F.normalize(anchor, dim=1), bank, own, 5, 2.0, 1.0, None)
    for i in range(2):                 # threshold above every cosine: the 5 nearest others
        order = [j for j in sims[i].argsort(descending=True).tolist() if j != own[i]]
        assert neg[i].tolist() == order[:5]
    cut = 0.2                          # only rows below the threshold may be mined
    neg = mine_negatives(F.normalize(anchor, dim=1), bank, own, 5, cut, 1.0, None)
    for i in range(2):
        below = [j for j in sims[i].argsort(descending=True).tolist()
                 if sims[i, j] < cut and j != own[i]]
        assert neg[i].tolist() == below[:5]
    gen = torch.Generator().manual_seed(1)
    neg = mine_negatives(F.normalize(anchor, dim=1), bank, own, 5, -1.5, 1.0, gen)
    assert neg.tolist() == torch.randint(0, 50, (2, 5),                 # nothing below: random
                                         generator=torch.Generator().manual_seed(1)).tolist()


def test_tce_nce_loss_matches_the_official_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 6) * 4
    valid = torch.ones(3, 5)
    valid[1, 2] = 0                                    # the anchor's own row, left out
    log_z, n = 2.5, 50
    p, noise = logits.exp() / math.exp(log_z), 5 / n   # m Pn, m = 5 negatives
    d1 = (p[:, 0] / (p[:, 0] + noise)).log()
    d0 = (noise / (p[:, 1:] + noise)).log() * valid
    expected = -(d1.sum() + d0.sum()) / 3
    got = nce_loss(logits, valid, torch.tensor(log_z), n)
    assert torch.allclose(got, expected, atol=1e-5)


def test_tce_nce_charges_a_collapse_that_the_softmax_form_does_not_see():
    """All logits equal (every embedding one point): shifting them together leaves the
    softmax loss where it is but changes NCE, so NCE still has a gradient there."""
    flat = torch.full((4, 9), 1 / 0.07, requires_grad=True)
    soft = F.cross_entropy(flat, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(soft, torch.tensor(math.log(9)))
    soft.backward()
    assert torch.allclose(flat.grad.sum(1), torch.zeros(4), atol=1e-6)   # no push apart
    flat.grad = None
    nce_loss(flat, torch.ones(4, 8), torch.tensor(10.0), 100).backward()
    assert (flat.grad[:, 1:] > 0).all()          # every negative is pushed down


def test_tce_trains_a_2d_encoder_and_stores_anchors_in_its_bank():
    torch.manual_seed(0)
    method = TCE(TCEParams(negatives=3), "resnet18-tiny", AugConfig(size=32))
    method.attach_dataset(6)
    parts = _grads_reach_every_parameter(method)
    assert parts["threshold"] == -1.0 and np.isfinite(parts["nce"])
    assert all(-1.0 <= parts[k] <= 1.0 for k in ("pos_cos", "neg_cos"))   # collapse gauges
    assert method.frame_model
    # NCE's partition is fixed on the first step and kept in the state (checkpoints)
    log_z = float(method.log_partition)
    assert math.isfinite(log_z) and "log_partition" in method.state_dict()
    method(_batch(method.views(64, np.random.default_rng(1))), None)
    assert float(method.log_partition) == log_z
    import pytest
    with pytest.raises(ValueError, match="2D frame backbone"):
        TCE(TCEParams(), "r3d18-tiny", AugConfig(size=32))
    with pytest.raises(ValueError, match="nce or softmax"):
        TCEParams(loss="infonce").validate()
    softmax = TCE(TCEParams(negatives=3, loss="softmax"), "resnet18-tiny", AugConfig(size=32))
    softmax.attach_dataset(6)
    assert np.isfinite(_grads_reach_every_parameter(softmax)["nce"])


def test_tce_anchor_and_positive_share_crop_and_flip_as_in_the_official_code():
    """The same frame twice, colour augmentation off: with shared geometry the two views
    are one image, so their embeddings coincide; with independent crops they do not."""
    aug = AugConfig(size=32, scale=(0.2, 0.5), flip_p=0.5, jitter_p=0, gray_p=0, blur_p=0)
    batch = _batch([[0], [0]])
    batch["clips"][1] = batch["clips"][0]
    for shared in (True, False):
        torch.manual_seed(0)
        method = TCE(TCEParams(negatives=3, shared_geometry=shared), "resnet18-tiny", aug)
        method.attach_dataset(6)
        _, parts = method(batch, torch.Generator().manual_seed(0))
        assert (parts["pos_cos"] > 0.9999) == shared


# --- controllable augmentations ---------------------------------------------------------

def test_ctrlaug_local_clips_are_centred_in_their_part_of_the_video():
    rng = np.random.default_rng(0)
    for _ in range(30):
        glob, *local = local_global_views(120, 16, 1, 4, 16, rng)
        assert glob[0] == 0 and glob[-1] == 119 and len(glob) == 16
        for k, clip in enumerate(local):
            centre = (clip[0] + clip[-1]) / 2
            assert k * 30 - 1 <= centre <= (k + 1) * 30 + 1 and (np.diff(clip) == 1).all()


def _s(lt, lb, lf, ls, gt, gb, gf, gs):
    t = torch.tensor
    return correspondence(t([lt], dtype=torch.float64), t([lb]), t([lf]), ls,
                          t([gt], dtype=torch.float64), t([gb]), t([gf]), gs)[0]


def test_ctrlaug_correspondence_matches_hand_computed_overlaps():
    # global: frames [0, 8), whole frame, 2 x 1 x 2 cells; local: frames [2, 6), the box
    # x in [0.25, 0.75], y in [0, 1], 1 x 1 x 1 cell.
    s = _s([2, 6], [0.25, 0.0, 0.75, 1.0], False, (1, 1, 1),
           [0, 8], [0.0, 0.0, 1.0, 1.0], False, (2, 1, 2))
    # time: half in each global step; space: half in each column -> a quarter each
    assert torch.allclose(s, torch.full((1, 4), 0.25))
    s = _s([0, 2], [0.0, 0.0, 0.5, 0.5], False, (1, 2, 2),
           [0, 4], [0.0, 0.0, 1.0, 1.0], False, (2, 2, 2))
    # the local clip is the top-left quarter in the first global step: cell (t0, y0, x0)
    assert torch.allclose(s[:, 0], torch.ones(4)) and float(s[:, 1:].sum()) == 0


def test_ctrlaug_correspondence_rows_sum_to_one_and_flip_mirrors_columns():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        g = torch.rand(4, generator=gen)
        gb = [float(g[0]) * 0.2, float(g[1]) * 0.2, 0.8 + float(g[2]) * 0.2,
              0.8 + float(g[3]) * 0.2]
        r = torch.rand(2, generator=gen) * 0.3
        lb = [gb[0] + float(r[0]) * (gb[2] - gb[0]), gb[1] + float(r[1]) * (gb[3] - gb[1])]
        lb += [lb[0] + 0.5 * (gb[2] - gb[0]), lb[1] + 0.5 * (gb[3] - gb[1])]
        for lf in (False, True):
            s = _s([5, 21], lb, lf, (2, 2, 2), [0, 64], gb, False, (8, 4, 4))
            assert torch.allclose(s.sum(1), torch.ones(8), atol=1e-5)
        plain = _s([5, 21], lb, False, (2, 2, 2), [0, 64], gb, False, (8, 4, 4))
        flipped = _s([5, 21], lb, False, (2, 2, 2), [0, 64], gb, True, (8, 4, 4))
        # flipping the global view mirrors its x cells: column x <-> 3 - x
        mirror = flipped.view(8, 8, 4, 4).flip(-1).reshape(8, 128)
        assert torch.allclose(plain, mirror, atol=1e-6)


def test_gradient_reversal_negates_the_gradient():
    x = torch.randn(5, requires_grad=True)
    (GradReverse.apply(x) * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, -torch.arange(5.0))


def test_mine_bound_is_the_donsker_varadhan_form():
    joint, marginal = torch.tensor([1.0, 3.0]), torch.tensor([0.0, math.log(3.0)])
    assert abs(float(mine_bound(joint, marginal)) - (2.0 - math.log(2.0))) < 1e-6


def _ctrlaug(**kw):
    torch.manual_seed(0)
    return CtrlAug(CtrlAugParams(clip_len=4, global_len=8, n_local=2, **kw), "r3d18-tiny",
                   AugConfig(size=32))


def test_ctrlaug_terms_reach_every_parameter_and_switch_off():
    method = _ctrlaug()
    parts = _grads_reach_every_parameter(method)
    assert set(parts) == {"rc", "mi", "td"}
    # the global view shares the encoder's weights but keeps more time steps
    assert next(method.global_encoder.stages[3].parameters()) is \
        next(method.encoder.stages[3].parameters())
    x = torch.rand(1, 3, 8, 32, 32)
    assert method.global_encoder(x)["res5"].shape[2] > method.encoder(x)["res5"].shape[2]
    views = method.views(64, np.random.default_rng(0))
    for off in ("w_mi", "w_td"):
        _, parts = _ctrlaug(**{off: 0.0})(_batch(views), None)
        assert off[2:] not in parts and len(parts) == 2
    for head in ("mlp", "gru+mlp"):
        _grads_reach_every_parameter(_ctrlaug(td_head=head))


def test_ctrlaug_mi_term_trains_the_estimator_up_and_the_encoder_down():
    method = _ctrlaug()
    feats = torch.randn(12, 128, requires_grad=True)
    group = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 3, 3, 0])
    one = torch.zeros(1, 128)                      # one video: no local-global term
    method._mi_loss(feats, group, one, one, torch.Generator().manual_seed(0)).backward()
    through_reversal = feats.grad.clone()
    # the same estimate without reversal: the estimator's loss is -bound
    feats.grad = None
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    same = (group[:, None] == group[None, :]) & ~torch.eye(12, dtype=torch.bool)
    partner = same.float().argmax(1)
    bound = mine_bound(method.critic(feats, feats[partner]),    # marginal: arbitrary pairs
                       method.critic(feats, feats[perm]))
    (-bound).backward()
    assert torch.allclose(through_reversal, -feats.grad, atol=1e-6)


def test_tclr_terms_add_up_at_the_paper_or_the_official_scale():
    """Per anchor, the paper sums L_LL and L_GL over the n local clips (1 : n : 2n); the
    official code sums L_LL over the batch and L_GL over four pairings (1 : B : 16) and may
    add loss_ic1; `mean` is every term a mean."""
    totals = {}
    for scale in ("mean", "paper", "official"):
        torch.manual_seed(0)
        method = TCLR(TCLRParams(clip_len=16, loss_scale=scale), "r3d18-tiny",
                      AugConfig(size=32))
        batch = _batch(method.views(64, np.random.default_rng(0)))
        totals[scale] = method(batch, torch.Generator().manual_seed(0))
    (mean, parts), n, b = totals["mean"], 4, 4
    parts = {k: float(v) for k, v in parts.items()}     # detached tensors, read when logged
    assert parts.keys() == {"ic", "ll", "gl"}
    assert float(mean) == pytest.approx(parts["ic"] + parts["ll"] + parts["gl"], rel=1e-5)
    assert float(totals["paper"][0]) == pytest.approx(
        parts["ic"] + n * parts["ll"] + n * parts["gl"], rel=1e-5)
    assert float(totals["official"][0]) == pytest.approx(
        parts["ic"] + b * parts["ll"] + 8 * parts["gl"], rel=1e-5)
    torch.manual_seed(0)
    extra = TCLR(TCLRParams(clip_len=16, w_local_ic=1.0), "r3d18-tiny", AugConfig(size=32))
    _, with_ic1 = extra(_batch(extra.views(64, np.random.default_rng(0))),
                        torch.Generator().manual_seed(0))
    assert "local_ic" in with_ic1 and with_ic1["local_ic"] > 0


def test_tce_follows_the_official_pairing_and_head_by_default():
    p = TCEParams()
    assert (p.window, p.head) == (0, "linear")
    (a,), (b,) = nearby_pair(50, p.window, np.random.default_rng(0))
    assert a == b                                 # FRAME_PADDING 0: the same frame
    method = TCE(p, "resnet18-tiny", AugConfig(size=32))
    assert [type(m).__name__ for m in method.head] == ["Linear"]
    mlp = TCE(TCEParams(head="mlp"), "resnet18-tiny", AugConfig(size=32))
    assert len(mlp.head) == 4


def test_ctrlaug_intensity_groups_are_the_supplement_s_ranges_and_maps_the_paper_s():
    from vssl_cli.methods.ctrlaug import BLUR_BANDS, HUE_BANDS, JITTER_BANDS
    method = _ctrlaug()
    group, drawn = method._intensity(4000, torch.Generator().manual_seed(0), "cpu")
    strength = (drawn["brightness"] - 1).abs()
    assert strength.max() <= 0.4 + 1e-6 and drawn["hue"].abs().max() <= 0.1 + 1e-6
    assert set(drawn["blur_radius"].tolist()) <= {3.0, 5.0}
    assert drawn["blur_sigma"].min() >= 0.1 and drawn["blur_sigma"].max() <= 2.0
    assert len(JITTER_BANDS) == 4 and len(HUE_BANDS) == 2 and len(BLUR_BANDS) == 4
    torch.manual_seed(0)
    paper = CtrlAug(CtrlAugParams(), "r3d18-tiny", AugConfig(size=112))
    x = torch.zeros(1, 3, 16, 112, 112)
    assert paper._grid(paper.encoder(x)["res5"]).shape[2:] == (2, 4, 4)
    assert paper._grid(paper.global_encoder(x)["res5"]).shape[2:] == (8, 4, 4)


@pytest.mark.parametrize("name,sets", [
    ("simclr", []), ("tclr", []), ("tclr", ["params.w_ll=0"]), ("tclr", ["params.w_gl=0"]),
    ("vthcl", ["params.alpha=1"]), ("tce", []), ("ctrlaug", []), ("ctrlaug", ["params.w_mi=0"]),
    ("ctrlaug", ["params.w_td=0"]), ("teg", ["params.clip_len=4", "params.long_len=8"]),
    ("teg", ["params.clip_len=4", "params.long_len=8", "params.alpha=0"]),
])
def test_ddp_is_told_exactly_when_a_step_leaves_parameters_unused(name, sets, tiny_frames):
    """DDP searches the autograd graph at every step only for configs that need it; one
    that needs it and does not say so would stop a multi-GPU run at its second step."""
    from vssl_cli.data.dataset import ClipDataset, collate_clips
    from vssl_cli.engine.config import resolve
    from vssl_cli.methods import method_class
    cls = method_class(name)
    backbone = "resnet18-tiny" if name == "tce" else "r3d18-tiny"
    fit = ["params.temporal_strides=[1,1,1,1]"] if name in ("tclr", "ctrlaug") else []
    config = resolve(cls.Params, None, {"backbone": backbone},
                     ["aug.size=32", "clip_len=4", *fit, *sets])
    config["method"] = name
    torch.manual_seed(0)
    method = cls.from_config(config)
    data = ClipDataset(str(tiny_frames), method.view_sampler(), "all", 0)
    method.attach_dataset(len(data))
    loss, _ = method(collate_clips([data[i] for i in range(4)]), torch.Generator().manual_seed(0))
    loss.backward()
    idle = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert method.leaves_parameters_unused() == bool(idle), idle
