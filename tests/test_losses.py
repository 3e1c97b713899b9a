"""Losses against direct loop-based recomputations of their definitions, and invariants."""
import math

import pytest
import torch
import torch.nn.functional as F

from vssl_cli.losses import info_nce, nt_xent, soft_info_nce


def h(u, v, tau):
    return math.exp(F.cosine_similarity(u, v, dim=0).item() / tau)


def nt_xent_by_loops(z1, z2, tau):
    views = list(z1) + list(z2)
    n2, n = len(views), len(z1)
    total = 0.0
    for i in range(n2):
        partner = (i + n) % n2
        denominator = sum(h(views[i], views[k], tau) for k in range(n2) if k != i)
        total += -math.log(h(views[i], views[partner], tau) / denominator)
    return total / n2


def test_nt_xent_matches_definition():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(nt_xent_by_loops(z1, z2, 0.1), rel=1e-5)


def test_nt_xent_symmetric_and_known_values():
    torch.manual_seed(1)
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    assert nt_xent(z1, z2).item() == pytest.approx(nt_xent(z2, z1).item(), rel=1e-6)
    # Identical views, mutually orthogonal items: positive term e^{1/tau}, 2N-2 terms e^0.
    e = torch.eye(4)
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 6))
    assert nt_xent(e, e, tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_mask_and_gradients():
    torch.manual_seed(2)
    a = torch.randn(3, 4, requires_grad=True)
    c = torch.randn(5, 4, requires_grad=True)
    pos = torch.tensor([0, 2, 4])
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1] = True
    loss = info_nce(a, c, pos, 0.2, mask)
    by_hand = 0.0
    for i in range(3):
        denominator = sum(h(a[i], c[j], 0.2) for j in range(5) if not mask[i, j])
        by_hand += -math.log(h(a[i], c[pos[i]], 0.2) / denominator)
    assert loss.item() == pytest.approx(by_hand / 3, rel=1e-5)
    loss.backward()
    assert a.grad.abs().sum() > 0 and c.grad[1].abs().sum() > 0  # c1 still a negative for rows 1,2


def test_soft_target_reduces_to_info_nce_for_one_hot():
    torch.manual_seed(3)
    a, c = torch.randn(4, 6), torch.randn(7, 6)
    pos = torch.tensor([1, 0, 6, 3])
    onehot = F.one_hot(pos, 7).float()
    assert soft_info_nce(a, c, onehot, 0.1).item() == pytest.approx(
        info_nce(a, c, pos, 0.1).item(), rel=1e-5)
    soft = torch.full((4, 7), 1 / 7)
    by_hand = sum(-sum(soft[i, j].item() * math.log(h(a[i], c[j], 0.1) /
                                                    sum(h(a[i], c[k], 0.1) for k in range(7)))
                       for j in range(7)) for i in range(4)) / 4
    assert soft_info_nce(a, c, soft, 0.1).item() == pytest.approx(by_hand, rel=1e-5)
