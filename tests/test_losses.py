"""Each loss against a hand computation on a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from vocabshrink.losses import (
    HiddenProjection,
    ReduceMap,
    hidden_cosine,
    hidden_mse,
    kl_with_temperature,
    match_kl,
    mlm_loss,
    reduce_kl,
    shared_vocabulary,
    similarity_loss,
)


def test_hidden_mse_masked_by_hand():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 4.0]], [[2.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    # per position: (0 + 4)/2 = 2, (4 + 0)/2 = 2, 0; the masked-out (9 + 0)/2 does not count
    assert hidden_mse(s, t, mask).item() == pytest.approx(4.0 / 3)
    assert hidden_mse(s, t, mask, reduction="sum").item() == pytest.approx(4.0)
    assert hidden_mse(s, t).item() == pytest.approx((2 + 4.5 + 2 + 0) / 4)


def test_hidden_cosine_by_hand():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 2.0], [2.0, 2.0], [-1.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # orthogonal: 1 - 0; parallel: 1 - 1
    assert hidden_cosine(s, t, mask).item() == pytest.approx(0.5)
    full = hidden_cosine(s, t, reduction="sum").item()
    assert full == pytest.approx(1.0 + 0.0 + (1 + 1 / math.sqrt(2)), abs=1e-6)


def test_hidden_losses_reject_mismatched_widths():
    with pytest.raises(ValueError, match="project the student"):
        hidden_mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="mask"):
        hidden_cosine(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(2, 2, dtype=torch.bool))


def test_mlm_loss_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, -100, 0]])
    expected = [-math.log(3 / 4), -math.log(1 / 2)]
    assert mlm_loss(logits, labels, reduction="sum").item() == pytest.approx(sum(expected))
    assert mlm_loss(logits, labels).item() == pytest.approx(sum(expected) / 2)
    # nothing masked: zero, not NaN
    assert mlm_loss(logits, torch.full_like(labels, -100)).item() == 0.0


def test_kl_with_temperature_by_hand():
    teacher = torch.tensor([[2.0, 0.0]])
    student_logp = torch.log(torch.tensor([[0.5, 0.5]]))
    t = 2.0
    p = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    assert kl_with_temperature(student_logp, teacher, t).item() == pytest.approx(kl * t * t, rel=1e-6)
    same = torch.log_softmax(teacher / t, dim=-1)
    assert kl_with_temperature(same, teacher, t).item() == pytest.approx(0.0, abs=1e-7)


# A split table for V_T = 3, V_S = 4: teacher 0 -> [0]; teacher 1 -> [1, 2]; teacher 2 -> [3, 3] (a repeated piece)
OFFSETS = torch.tensor([0, 1, 3, 5])
IDS = torch.tensor([0, 1, 2, 3, 3])


def _log_softmax(xs):
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def test_reduce_map_sum_of_logits_by_hand():
    z = [1.0, 2.0, 3.0, -1.0]
    scores = [z[0], z[1] + z[2], z[3] + z[3]]
    out = ReduceMap(OFFSETS, IDS)(torch.tensor([z]))
    assert out[0].tolist() == pytest.approx(_log_softmax(scores), rel=1e-6)


def test_reduce_map_sum_of_probabilities_by_hand():
    z = [1.0, 2.0, 3.0, -1.0]
    p = [math.exp(x) for x in _log_softmax(z)]
    # teacher 2's pieces are [3, 3]: the same piece's probability counts twice
    scores = [math.log(p[0]), math.log(p[1] + p[2]), math.log(2 * p[3])]
    out = ReduceMap(OFFSETS, IDS)(torch.tensor([z]), sum_probs=True)
    assert out[0].tolist() == pytest.approx(_log_softmax(scores), rel=1e-6)


def test_reduce_map_sum_probs_does_not_underflow():
    z = torch.tensor([[0.0, -300.0, -320.0, 10.0]], requires_grad=True)
    out = ReduceMap(OFFSETS, IDS)(z, sum_probs=True)
    assert torch.isfinite(out).all()
    # teacher 1's pieces have probabilities ~e^-310: their log-sum must be close to -310, not -inf
    assert out[0, 1].item() == pytest.approx(-310.0 + math.log(1 + math.exp(-20)) - math.log(2), abs=0.1)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_reduce_kl_by_hand_with_temperature():
    z = [1.0, 2.0, 3.0, -1.0]
    teacher = [0.5, 1.5, -0.5]
    t = 2.0
    q = _log_softmax([z[0] / t, (z[1] + z[2]) / t, 2 * z[3] / t])
    p = [math.exp(x) for x in _log_softmax([x / t for x in teacher])]
    expected = t * t * sum(pi * (math.log(pi) - qi) for pi, qi in zip(p, q))
    got = reduce_kl(torch.tensor([z, z]), torch.tensor([teacher, teacher]), ReduceMap(OFFSETS, IDS), t,
                    reduction="sum")
    assert got.item() == pytest.approx(2 * expected, rel=1e-5)


def test_reduce_kl_rejects_a_table_for_another_teacher():
    with pytest.raises(ValueError, match="another teacher"):
        reduce_kl(torch.zeros(1, 4), torch.zeros(1, 5), ReduceMap(OFFSETS, IDS))
    with pytest.raises(ValueError, match="empty split"):
        ReduceMap(torch.tensor([0, 1, 1]), torch.tensor([0]))


def test_shared_vocabulary():
    # teacher 0 -> [2]; 1 -> [0, 1]; 2 -> [2] (same piece as teacher 0); 3 -> [4] = unk; 4 -> [3]
    offsets = torch.tensor([0, 1, 3, 4, 5, 6])
    ids = torch.tensor([2, 0, 1, 2, 4, 3])
    teacher, student = shared_vocabulary(offsets, ids, student_unk=4)
    assert sorted(zip(teacher.tolist(), student.tolist())) == [(0, 2), (4, 3)]


def test_match_kl_by_hand():
    student = torch.tensor([[0.0, 1.0, 2.0, 9.0]])  # student id 3 is not shared and must not count
    teacher = torch.tensor([[3.0, 7.0, 1.0]])  # teacher id 1 is not shared
    shared_t, shared_s = torch.tensor([0, 2]), torch.tensor([2, 1])
    q = _log_softmax([2.0, 1.0])
    p = [math.exp(x) for x in _log_softmax([3.0, 1.0])]
    expected = sum(pi * (math.log(pi) - qi) for pi, qi in zip(p, q))
    assert match_kl(student, teacher, shared_t, shared_s).item() == pytest.approx(expected, rel=1e-5)


def test_hidden_projection_maps_each_layer_pair():
    torch.manual_seed(0)
    proj = HiddenProjection(4, 6, [(0, 0), (2, 6)])
    x = torch.randn(2, 3, 4)
    out = proj(x, 2, 6)
    lin = proj.maps["s2_t6"]
    assert out.shape == (2, 3, 6)
    assert torch.allclose(out, x @ lin.weight.T + lin.bias)
    with pytest.raises(KeyError):
        proj(x, 1, 1)


def test_similarity_loss_against_a_hand_computation():
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    want = 0.0
    for i in range(3):
        for j in range(3):
            if i != j:
                want += (cos(s[i], s[j]) - cos(t[i], t[j])) ** 2
    assert math.isclose(float(similarity_loss(s, t, reduction="sum")), want, rel_tol=1e-6)
    assert math.isclose(float(similarity_loss(s, t)), want / 6, rel_tol=1e-6)
    # a rotated and scaled copy of the teacher, of another width, has the same similarities: zero loss
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    rotated = 3.0 * torch.cat([t, torch.zeros(3, 2)], dim=1) @ q
    assert float(similarity_loss(rotated, t)) < 1e-10
    # masked rows take no part
    keep = torch.tensor([True, True, False])
    assert math.isclose(float(similarity_loss(s, t, keep, reduction="sum")),
                        2 * (cos(s[0], s[1]) - cos(t[0], t[1])) ** 2, rel_tol=1e-6)
    with pytest.raises(ValueError, match="same B"):
        similarity_loss(s[:2], t)
