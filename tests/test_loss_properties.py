"""Properties the papers state or imply, checked on random logits."""
import pytest
import torch
import torch.nn.functional as F

from kdplug.losses import DKDLoss, KDLoss, MultiTempKDLoss, NKDLoss, NormKDLoss
from kdplug.losses.dkd import dkd_terms
from kdplug.losses.functional import Temperature, apply_logit_norm, kl_rows, l2_normalize, zscore
from kdplug.losses.kd import kd_per_sample


def logits(n=8, c=10, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale


@pytest.mark.parametrize('loss', [KDLoss(temperature=2.0, logit_norm='zscore'),
                                  DKDLoss(alpha=9.0, beta=72.0, temperature=2.0, logit_norm='zscore'),
                                  MultiTempKDLoss([1, 2, 4], logit_norm='zscore')])
def test_zscore_makes_loss_invariant_to_shift_and_positive_scale(loss):
    s, t, y = logits(seed=1), logits(seed=2), torch.arange(8) % 10
    base = loss(s, t, y)
    shift_s, shift_t = torch.randn(8, 1) * 5, torch.randn(8, 1) * 5
    scale_s, scale_t = torch.rand(8, 1) * 10 + 0.1, torch.rand(8, 1) * 10 + 0.1
    moved = loss(s * scale_s + shift_s, t * scale_t + shift_t, y)
    torch.testing.assert_close(moved, base, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(KDLoss(temperature=2.0)(s * 3 + 1, t, y), KDLoss(temperature=2.0)(s, t, y))


def test_normkd_is_scale_free_up_to_its_weight():
    """Dividing by t_norm * std removes the logits' scale; only the T_t^2 weight keeps it: L(a s, a t) = a^2 L."""
    s, t = logits(seed=3), logits(seed=4)
    loss = NormKDLoss(t_norm=2.0)
    torch.testing.assert_close(loss(5.0 * s, 5.0 * t), 25.0 * loss(s, t), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('transform', [zscore, l2_normalize,
                                       lambda x: x / Temperature(t_norm=2.0)(x),
                                       lambda x: x / Temperature([1.0, 3.0], t_norm=1.5)(x)[:, :1]])
@pytest.mark.parametrize('scale', [0.1, 1.0, 10.0])
def test_transforms_never_change_the_argmax(transform, scale):
    x = logits(n=64, c=100, scale=scale, seed=5)
    assert torch.equal(transform(x).argmax(dim=1), x.argmax(dim=1))


@pytest.mark.parametrize('t_norm', [None, 2.0])
@pytest.mark.parametrize('scale', [0.1, 1.0, 10.0])
def test_dkd_decomposes_kd_per_sample(t_norm, scale):
    """Zhao et al. eq. (1): KD = TCKD + (1 - p_t^teacher) * NCKD, per sample, at the same temperature."""
    s, t = logits(n=16, c=100, scale=scale, seed=6).double(), logits(n=16, c=100, scale=scale, seed=7).double()
    y = torch.randint(0, 100, (16,), generator=torch.Generator().manual_seed(8))
    temperature = Temperature(None if t_norm else 4.0, t_norm)
    tckd, nckd, weight = dkd_terms(s, t, y, temperature)
    p_target_teacher = F.softmax(t / temperature(t), dim=1).gather(1, y[:, None]).squeeze(1)
    kd = kd_per_sample(s, t, temperature)
    torch.testing.assert_close(kd, weight * (tckd + (1 - p_target_teacher) * nckd), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('loss', [KDLoss(), NormKDLoss(), DKDLoss(), MultiTempKDLoss(),
                                  KDLoss(temperature=2.0, logit_norm='zscore'),
                                  KDLoss(temperature=1.0, logit_norm='l2'),
                                  DKDLoss(t_norm=2.0), MultiTempKDLoss([1, 2, 4], t_norm=1.0)])
def test_kl_based_losses_vanish_when_student_equals_teacher(loss):
    x = logits(seed=9, scale=3.0)
    value = loss(x, x.clone(), torch.arange(8) % 10)
    assert value.abs() < 1e-6
    assert loss(x, logits(seed=10), torch.arange(8) % 10) > 1e-3


def test_single_temperature_multi_temp_kd_is_kd():
    s, t = logits(seed=11), logits(seed=12)
    torch.testing.assert_close(MultiTempKDLoss([3.0])(s, t), KDLoss(temperature=3.0)(s, t))
    torch.testing.assert_close(MultiTempKDLoss([1.0], t_norm=2.0)(s, t), NormKDLoss(t_norm=2.0)(s, t))


def test_nkd_reduces_soft_labels_to_their_argmax():
    s, t = logits(seed=13), logits(seed=14)
    y = torch.arange(8) % 10
    soft = 0.7 * F.one_hot(y, 10) + 0.3 * F.one_hot((y + 3) % 10, 10)
    torch.testing.assert_close(NKDLoss()(s, t, soft), NKDLoss()(s, t, y))


def test_nkd_target_term_is_teacher_weighted_cross_entropy():
    """With gamma = 0 only L_target = -p_t(y) log p_s(y) remains (001, eq. of the normalized target loss)."""
    s, t, y = logits(seed=15), logits(seed=16), torch.arange(8) % 10
    expected = -(F.softmax(t, 1).gather(1, y[:, None]) * F.log_softmax(s, 1).gather(1, y[:, None])).mean()
    torch.testing.assert_close(NKDLoss(gamma=0.0)(s, t, y), expected)


def test_normkd_constant_teacher_row_is_uniform_with_the_floored_weight():
    """A constant row has std 0, floored at 0.01 (docs/losses.md): softened to the uniform distribution at
    T = t_norm * 0.01, weighted by T_t^2 = (t_norm * 0.01)^2, the limit of the paper's weight; finite gradient."""
    s = logits(n=2, seed=17).requires_grad_()
    t = torch.zeros(2, 10)
    t[1] = 3.0
    value = NormKDLoss(t_norm=2.0)(s, t)
    value.backward()
    uniform = torch.full((2, 10), -torch.log(torch.tensor(10.0)))
    t_s = 2.0 * s.detach().std(dim=1, keepdim=True)  # the student's rows are spread: the paper's temperature
    expected = (kl_rows(uniform, F.log_softmax(s.detach() / t_s, 1)) * (2.0 * 0.01) ** 2).mean()
    torch.testing.assert_close(value.detach(), expected)
    assert torch.isfinite(s.grad).all()


def test_zscore_of_constant_logits_is_zero():
    assert torch.equal(zscore(torch.full((3, 5), 7.0)), torch.zeros(3, 5))
    assert torch.equal(apply_logit_norm(torch.zeros(3, 5), 'l2'), torch.zeros(3, 5))


def test_loss_weight_scales_and_result_is_float32():
    s, t = logits(seed=18).half(), logits(seed=19).half()
    assert KDLoss(loss_weight=3.0)(s, t).dtype == torch.float32
    torch.testing.assert_close(KDLoss(loss_weight=3.0)(s, t), 3.0 * KDLoss()(s, t))


def test_bad_input_gives_clear_errors():
    s, t = logits(), logits()
    with pytest.raises(ValueError, match='either temperature'):
        KDLoss(temperature=4.0, t_norm=2.0)
    with pytest.raises(ValueError, match='hard labels'):
        DKDLoss()(s, t, F.softmax(logits(seed=20), 1))
    with pytest.raises(ValueError, match='needs the ground-truth labels'):
        DKDLoss()(s, t)
    with pytest.raises(ValueError, match='num_classes'):
        KDLoss()(s, logits(c=11))
    with pytest.raises(ValueError, match='logit_norm'):
        KDLoss(logit_norm='std')
    with pytest.raises(ValueError, match=r'\[0, 10\)'):
        NKDLoss()(s, t, torch.full((8,), 10))
    for loss in (KDLoss, DKDLoss, NKDLoss):  # a set of temperatures: the loss that takes a set is named
        with pytest.raises(ValueError, match=r'softens at one temperature.*MultiTempKDLoss\(temperatures=\[1, 2\]\)'):
            loss(temperature=[1, 2])


def test_uskd_matches_a_direct_computation_of_its_three_terms():
    from kdplug.losses import USKDLoss
    s, w = logits(n=5, c=6, seed=21), logits(n=5, c=6, seed=22)
    y = torch.tensor([0, 3, 5, 2, 2])
    expected = []
    p_s = F.softmax(s, 1)
    squared = p_s[torch.arange(5), y] ** 2
    for i in range(5):
        q = squared[i] + (1 - squared.mean())
        target = -q * torch.log(p_s[i, y[i]])
        others = [k for k in range(6) if k != y[i]]
        p_w = F.softmax(w[i], 0)
        # the authors' ranking (yzd-v/cls_KD uskd.py line 73): all 6 classes, the target included, the student's part
        # divided by 1 - LOG p_y; Zipf 1/rank first, the target dropped after
        log_p_y = torch.log(p_s[i, y[i]])
        score = {k: p_w[k] / (1 - p_w[y[i]] + 1e-6) + torch.log(p_s[i, k]) / (1 - log_p_y + 1e-6) for k in range(6)}
        ranked = sorted(range(6), key=lambda k: -score[k])
        zipf = torch.tensor([1.0 / (ranked.index(k) + 1) for k in others])
        zipf = zipf / zipf.sum()
        non_target = -(zipf * F.log_softmax(s[i, others], 0)).sum()
        smooth = torch.full((6,), 0.1 / 6)
        smooth[y[i]] += 0.9
        weak = -(smooth * F.log_softmax(w[i], 0)).sum()
        expected.append(0.1 * target + 0.2 * non_target + 0.3 * weak)
    torch.testing.assert_close(USKDLoss(alpha=0.1, beta=0.2, mu=0.3)(s, w, y), torch.stack(expected).mean())
