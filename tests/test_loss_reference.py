"""kdplug's logit losses against the naive float64 references of tests/reference.py.

The library gets float32 logits; the reference gets float64 copies of the very same float32 values, so the only
difference is the library's float32 arithmetic. Grid: logit scale (x0.1, x1, x10) x batch size (1, 2, 7) x
number of classes (10, 100, 1000), random logits from a seeded torch.Generator.
"""
import itertools
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

from kdplug.losses import DKDLoss, KDLoss, MultiTempKDLoss, NKDLoss, NormKDLoss  # noqa: E402

RTOL = 1e-4
ATOL = 1e-5
# The library works in float32: its log-probabilities (each ~ log C in size) carry an absolute error of a few 1e-7,
# and a KL row subtracts two of them, so when teacher and student are close (small logits, high T) the float32 KL
# has an absolute error of a few 1e-7 whatever the formula, which the loss then multiplies by its weight (T^2,
# (alpha + beta) T^2, max(set)^2, gamma T^2, T_t^2). Measured worst case over 40 seeds of this grid: ~5e-7 per
# unit of weight. So the absolute tolerance grows with the weight of the KL terms:
# atol = ATOL + KL_ATOL * weight (e.g. 3.3e-5 for KD at T=4, 4e-4 for multi-temperature KD over 1..14).
KL_ATOL = 2e-6

SCALES = (0.1, 1.0, 10.0)
BATCHES = (1, 2, 7)
CLASSES = (10, 100, 1000)
GRID = list(itertools.product(SCALES, BATCHES, CLASSES))
GRID_IDS = [f'scale{sc:g}-N{n}-C{c}' for sc, n, c in GRID]


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py: tiny CPU tensors, one thread


def make_inputs(scale, n, c, seed_extra=0):
    """(s32, t32, y, s64, t64): float32 logits for the library, float64 copies for the reference, labels."""
    g = torch.Generator().manual_seed(1000003 * c + 1009 * n + int(scale * 100) + seed_extra)
    s32 = (torch.randn(n, c, generator=g) * scale).float()
    t32 = (torch.randn(n, c, generator=g) * scale * 1.5 + 0.3 * scale * torch.randn(1, c, generator=g)).float()
    y = torch.randint(0, c, (n,), generator=g)
    return s32, t32, y, s32.double(), t32.double()


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = float(actual)
    expected = float(expected)
    assert abs(actual - expected) <= atol + rtol * abs(expected), (
        f'library {actual!r} vs reference {expected!r} (abs diff {abs(actual - expected):.3e}, '
        f'rel {abs(actual - expected) / max(abs(expected), 1e-300):.3e})')


def close_per_sample(actual, expected, rtol=RTOL, atol=ATOL):
    actual = actual.detach().double().tolist()
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert abs(a - e) <= atol + rtol * abs(e), f'sample {i}: library {a!r} vs reference {e!r}'


# --------------------------------------------------------------------------------------------------------------
# Every configuration: id -> (library loss factory, reference per-sample function (s64, t64, y) -> (N,) that applies
# any logit transform itself, whether the library needs the labels, KL weight (s64, t64) -> float for the tolerance)
# --------------------------------------------------------------------------------------------------------------

def fixed(w):
    """KL weight of a fixed-temperature case: the same for every batch."""
    return lambda s, t: w


def normkd_weight(t_norm, extra=1.0):
    """KL weight of a NormKD case: the largest extra * T_t^2 = extra * (t_norm * std(t_i))^2 of the batch."""
    return lambda s, t: extra * max(tt ** 2 for tt in ref.normkd_temperatures(s, t, t_norm)[1])


CASES = {
    'kd_T4': (lambda: KDLoss(temperature=4.0), lambda s, t, y: ref.kd_per_sample(s, t, 4.0), False, fixed(16)),
    'kd_T1': (lambda: KDLoss(temperature=1.0), lambda s, t, y: ref.kd_per_sample(s, t, 1.0), False, fixed(1)),
    'normkd_2': (lambda: NormKDLoss(t_norm=2.0), lambda s, t, y: ref.normkd_per_sample(s, t, 2.0), False,
                 normkd_weight(2.0)),
    'dkd_a1_b8_T4': (lambda: DKDLoss(alpha=1.0, beta=8.0, temperature=4.0),
                     lambda s, t, y: ref.dkd_per_sample(s, t, y, 4.0, 1.0, 8.0), True, fixed(9 * 16)),
    'normkd_dkd_a1_b8': (lambda: DKDLoss(alpha=1.0, beta=8.0, t_norm=2.0),
                         lambda s, t, y: ref.normkd_dkd_per_sample(s, t, y, 2.0, 1.0, 8.0), True,
                         normkd_weight(2.0, 9.0)),
    'normkd_dkd_a4_b5': (lambda: DKDLoss(alpha=4.0, beta=5.0, t_norm=2.0),
                         lambda s, t, y: ref.normkd_dkd_per_sample(s, t, y, 2.0, 4.0, 5.0), True,
                         normkd_weight(2.0, 9.0)),
    'nkd_T1_g1.5': (lambda: NKDLoss(temperature=1.0, gamma=1.5),
                    lambda s, t, y: ref.nkd_per_sample(s, t, y, 1.0, 1.5), True, fixed(1.5)),
    'nkd_T3_g3.5': (lambda: NKDLoss(temperature=3.0, gamma=3.5),
                    lambda s, t, y: ref.nkd_per_sample(s, t, y, 3.0, 3.5), True, fixed(3.5 * 9)),
    'mtkd_1_2_4': (lambda: MultiTempKDLoss(temperatures=[1, 2, 4]),
                   lambda s, t, y: ref.multi_temp_kd_per_sample(s, t, [1, 2, 4]), False, fixed(16)),
    'mtkd_1_to_14': (lambda: MultiTempKDLoss(temperatures=list(range(1, 15))),
                     lambda s, t, y: ref.multi_temp_kd_per_sample(s, t, list(range(1, 15))), False, fixed(196)),
    'kd_zscore_T2': (lambda: KDLoss(temperature=2.0, logit_norm='zscore'),
                     lambda s, t, y: ref.kd_per_sample(ref.zscore(s), ref.zscore(t), 2.0), False, fixed(4)),
    'kd_l2_T1': (lambda: KDLoss(temperature=1.0, logit_norm='l2'),
                 lambda s, t, y: ref.kd_per_sample(ref.l2(s), ref.l2(t), 1.0), False, fixed(1)),
    'dkd_zscore_T2': (lambda: DKDLoss(alpha=1.0, beta=8.0, temperature=2.0, logit_norm='zscore'),
                      lambda s, t, y: ref.dkd_per_sample(ref.zscore(s), ref.zscore(t), y, 2.0, 1.0, 8.0), True,
                      fixed(9 * 4)),
    'dkd_zscore_T4': (lambda: DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, logit_norm='zscore'),
                      lambda s, t, y: ref.dkd_per_sample(ref.zscore(s), ref.zscore(t), y, 4.0, 1.0, 8.0), True,
                      fixed(9 * 16)),
}


@pytest.mark.parametrize('scale,n,c', GRID, ids=GRID_IDS)
@pytest.mark.parametrize('case', sorted(CASES))
def test_forward_matches_reference(case, scale, n, c):
    make_loss, reference, needs_labels, kl_weight = CASES[case]
    s32, t32, y, s64, t64 = make_inputs(scale, n, c)
    loss = make_loss()
    out = loss(s32, t32, y if needs_labels else None)
    assert out.dtype == torch.float32 and out.dim() == 0
    expected = ref.batch_mean(reference(s64, t64, y))
    close(out, expected, atol=ATOL + KL_ATOL * kl_weight(s64, t64))


# The defaults and the KD spelling of NormKD, on a few grid points.
DEFAULT_CASES = {  # id -> (library loss, CASES key it must equal)
    'kd_default_is_T4': (lambda: KDLoss(), 'kd_T4'),
    'kd_tnorm_is_normkd': (lambda: KDLoss(t_norm=2.0), 'normkd_2'),
    'normkd_default_is_2': (lambda: NormKDLoss(), 'normkd_2'),
    'dkd_default_is_a1_b8_T4': (lambda: DKDLoss(), 'dkd_a1_b8_T4'),
    'nkd_default_is_T1_g1.5': (lambda: NKDLoss(), 'nkd_T1_g1.5'),
    'mtkd_default_is_1_to_14': (lambda: MultiTempKDLoss(), 'mtkd_1_to_14'),
}
FEW = [(0.1, 7, 1000), (1.0, 2, 100), (10.0, 7, 10)]
FEW_IDS = [f'scale{sc:g}-N{n}-C{c}' for sc, n, c in FEW]


@pytest.mark.parametrize('scale,n,c', FEW, ids=FEW_IDS)
@pytest.mark.parametrize('case', sorted(DEFAULT_CASES))
def test_defaults_match_reference(case, scale, n, c):
    make_loss, key = DEFAULT_CASES[case]
    _, reference, needs_labels, kl_weight = CASES[key]
    s32, t32, y, s64, t64 = make_inputs(scale, n, c, seed_extra=3)
    out = make_loss()(s32, t32, y if needs_labels else None)
    close(out, ref.batch_mean(reference(s64, t64, y)), atol=ATOL + KL_ATOL * kl_weight(s64, t64))


# Per sample too (a mean could hide errors that cancel): raw-logit cases, through .per_sample.
PER_SAMPLE_CASES = sorted(k for k in CASES if 'zscore' not in k and 'l2' not in k)


@pytest.mark.parametrize('scale,n,c', FEW, ids=FEW_IDS)
@pytest.mark.parametrize('case', PER_SAMPLE_CASES)
def test_per_sample_matches_reference(case, scale, n, c):
    make_loss, reference, _, kl_weight = CASES[case]
    s32, t32, y, s64, t64 = make_inputs(scale, n, c, seed_extra=7)
    per_sample = make_loss().per_sample(s32, t32, y)
    assert per_sample.shape == (n,)
    close_per_sample(per_sample, reference(s64, t64, y), atol=ATOL + KL_ATOL * kl_weight(s64, t64))


# --------------------------------------------------------------------------------------------------------------
# NKD with soft labels (mixup / cutmix): the library takes the argmax of the (N, C) soft labels
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('scale,n,c', GRID, ids=GRID_IDS)
@pytest.mark.parametrize('T,gamma', [(1.0, 1.5), (3.0, 3.5)])
def test_nkd_soft_labels_use_argmax(T, gamma, scale, n, c):
    s32, t32, y, s64, t64 = make_inputs(scale, n, c, seed_extra=11)
    g = torch.Generator().manual_seed(c * 31 + n)
    # mixup-like soft labels: lam * onehot(a) + (1 - lam) * onehot(b) + a little noise (no ties)
    a = torch.randint(0, c, (n,), generator=g)
    b = torch.randint(0, c, (n,), generator=g)
    lam = 0.3 + 0.4 * torch.rand(n, 1, generator=g)
    soft = (lam * torch.nn.functional.one_hot(a, c).float() + (1 - lam) * torch.nn.functional.one_hot(b, c).float()
            + 1e-3 * torch.rand(n, c, generator=g))
    soft = soft / soft.sum(dim=1, keepdim=True)
    hard = [int(torch.argmax(soft[i])) for i in range(n)]
    out = NKDLoss(temperature=T, gamma=gamma)(s32, t32, soft)
    close(out, ref.nkd_loss(s64, t64, hard, T, gamma))
    # and the same as passing the hard labels
    close(out, NKDLoss(temperature=T, gamma=gamma)(s32, t32, torch.tensor(hard)), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize('drop', [30.0, 110.0])
@pytest.mark.parametrize('T,gamma', [(1.0, 1.5), (3.0, 3.5)])
def test_nkd_target_the_student_all_but_rules_out_keeps_its_log_probability(T, gamma, drop):
    """NKD's target term takes log p^s_y as the log of the student's softmax at y down to p = 1e-20: at e^-110 (the
    float32 softmax gives 0 there) from a log-softmax; value and gradient as the float64 reference's."""
    s32, t32, y, _, t64 = make_inputs(1.0, 7, 10, seed_extra=13)
    s32 = s32 - drop * torch.nn.functional.one_hot(y, 10).float()
    s32.requires_grad_()
    out = NKDLoss(temperature=T, gamma=gamma)(s32, t32, y)
    close(out, ref.nkd_loss(s32.detach().double(), t64, y.tolist(), T, gamma))
    out.backward()
    # the gradient: autograd through NKD's formula in float64 (the target's column left out of the non-target sum)
    s64 = s32.detach().double().requires_grad_()
    target = torch.nn.functional.one_hot(y, 10).bool()
    p_t = torch.softmax(t64, dim=-1)
    log_q = torch.log_softmax((s64 / T).masked_fill(target, -torch.inf), dim=-1).masked_fill(target, 0.0)
    p_nt = torch.softmax((t64 / T).masked_fill(target, -torch.inf), dim=-1)
    per_sample = (-(p_t * torch.log_softmax(s64, dim=-1) * target).sum(-1)
                  - gamma * T ** 2 * (p_nt * log_q).sum(-1))
    per_sample.mean().backward()
    torch.testing.assert_close(s32.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# loss_weight: loss_weight=3 gives 3x the reference
# --------------------------------------------------------------------------------------------------------------

WEIGHTED = {  # CASES key -> factory of the same loss with a loss_weight
    'kd_T4': lambda w: KDLoss(temperature=4.0, loss_weight=w),
    'normkd_2': lambda w: NormKDLoss(t_norm=2.0, loss_weight=w),
    'dkd_a1_b8_T4': lambda w: DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, loss_weight=w),
    'normkd_dkd_a1_b8': lambda w: DKDLoss(alpha=1.0, beta=8.0, t_norm=2.0, loss_weight=w),
    'nkd_T3_g3.5': lambda w: NKDLoss(temperature=3.0, gamma=3.5, loss_weight=w),
    'mtkd_1_2_4': lambda w: MultiTempKDLoss(temperatures=[1, 2, 4], loss_weight=w),
    'kd_zscore_T2': lambda w: KDLoss(temperature=2.0, logit_norm='zscore', loss_weight=w),
}


@pytest.mark.parametrize('scale,n,c', [(1.0, 7, 10), (10.0, 2, 100), (0.1, 2, 1000)],
                         ids=['scale1-N7-C10', 'scale10-N2-C100', 'scale0.1-N2-C1000'])
@pytest.mark.parametrize('case', sorted(WEIGHTED))
def test_loss_weight_scales(case, scale, n, c):
    _, reference, needs_labels, kl_weight = CASES[case]
    make_loss = WEIGHTED[case]
    s32, t32, y, s64, t64 = make_inputs(scale, n, c, seed_extra=23)
    target = y if needs_labels else None
    weighted = make_loss(3.0)(s32, t32, target)
    unweighted = make_loss(1.0)(s32, t32, target)
    expected = ref.batch_mean(reference(s64, t64, y))
    close(weighted, 3.0 * expected, atol=3.0 * (ATOL + KL_ATOL * kl_weight(s64, t64)))
    close(weighted, 3.0 * unweighted, rtol=1e-6, atol=0.0)
