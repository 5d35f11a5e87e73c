"""USKDLoss against a float64 reference written from the authors' code, not from kdplug's.

The reference follows yzd-v/cls_KD, mmcls/models/dis_losses/uskd.py (commit 1e5d48f; Yang et al., "From Knowledge
Distillation to Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels",
ICCV 2023, arXiv:2303.13005), one sample at a time in plain Python / numpy float64:

* labels (their lines 33-39): a hard label, weight 1; a soft label: its two largest entries and their weights (a
  second label of weight 0 is no label: kdplug's decision where their code drops an arbitrary class);
* target term (lines 44-55): q_ij = p(l_ij)^2 + v_ij - mean over the batch of column j of p^2, 0 where v_ij = 0;
* weak head (lines 58-66): cross-entropy with 0.9 * (one-hot or the whole soft label) + 0.1 / C, times mu;
* ranking (line 73): w_k / (1 - sum_j w_lj + 1e-6) + log p_k / (1 - sum_j log p_lj + 1e-6) over ALL C classes;
  Zipf 1 / rank (lines 76-79), then the labels are dropped and the rest renormalised (lines 81-87);
* non-target term (lines 83-90): cross-entropy of z with the softmax over the non-label logits.

The gradient is the analytic one with q and z held fixed (both are detached in their code and in kdplug's).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdplug.losses import USKDLoss
from kdplug.losses.uskd import zipf_non_target_labels


def zipf_of(s, w, labels, active):
    """kdplug's Zipf labels from the student's and the weak head's logits."""
    return zipf_non_target_labels(F.log_softmax(s.float(), dim=-1), F.softmax(w.float(), dim=-1), labels, active)


def log_softmax_1d(x):
    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(x))
    return x - m - math.log(float(np.sum(np.exp(x - m))))


def reference_labels(gt, c):
    """[(label, weight), ...] of each sample: one for a hard label, the top two (weight > 0) of a soft one."""
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim == 1:
        return [[(int(y), 1.0)] for y in gt]
    out = []
    for row in gt:
        order = sorted(range(c), key=lambda k: -row[k])  # Python's sort is stable: ties to the lower index
        pairs = [(order[0], float(row[order[0]]))]
        if row[order[1]] > 0:
            pairs.append((order[1], float(row[order[1]])))
        out.append(pairs)
    return out


def reference_uskd(s, w, gt, alpha, beta, mu, score_margin=None):
    """(loss, d loss / d s, d loss / d w, Zipf labels (N, C)) in float64; ``score_margin`` (a list) receives, per
    sample, the smallest gap between two ranking scores (a float32 ranking can only differ below it)."""
    s, w = np.asarray(s, dtype=np.float64), np.asarray(w, dtype=np.float64)
    n, c = s.shape
    pairs = reference_labels(gt, c)
    soft = np.asarray(gt, dtype=np.float64).ndim == 2
    # the batch mean of p(l)^2, per label column, over the samples that have that label
    column = {}
    for i in range(n):
        p = np.exp(log_softmax_1d(s[i]))
        for j, (label, _) in enumerate(pairs[i]):
            column.setdefault(j, []).append(p[label] ** 2)
    mean = {j: sum(v) / len(v) for j, v in column.items()}
    total, grad_s, grad_w, zipf_all = 0.0, np.zeros_like(s), np.zeros_like(w), np.zeros_like(s)
    for i in range(n):
        log_p = log_softmax_1d(s[i])
        p = np.exp(log_p)
        log_pw = log_softmax_1d(w[i])
        pw = np.exp(log_pw)
        labels = [label for label, _ in pairs[i]]
        # target term
        target, g_target = 0.0, np.zeros(c)
        for j, (label, weight) in enumerate(pairs[i]):
            q = p[label] ** 2 + weight - mean[j] if weight > 0 else 0.0
            target -= q * log_p[label]
            g_target -= q * ((np.arange(c) == label) - p)
        # weak head
        if soft:
            t = 0.9 * np.asarray(gt[i], dtype=np.float64) + 0.1 / c
        else:
            t = 0.9 * (np.arange(c) == labels[0]) + 0.1 / c
        weak = -float(np.sum(t * log_pw))
        g_weak = pw * np.sum(t) - t
        # ranking over all C classes, the labels included
        w_lab = sum(pw[label] for label in labels)
        s_lab = sum(log_p[label] for label in labels)
        score = [pw[k] / (1 - w_lab + 1e-6) + log_p[k] / (1 - s_lab + 1e-6) for k in range(c)]
        order = sorted(range(c), key=lambda k: -score[k])
        if score_margin is not None:
            score_margin.append(min(score[a] - score[b] for a, b in zip(order, order[1:])))
        rank = {k: order.index(k) + 1 for k in range(c)}
        others = [k for k in range(c) if k not in labels]
        non, g_non = 0.0, np.zeros(c)
        if others:  # C = 2 with two labels: no non-target class, no term
            z = np.array([1.0 / rank[k] for k in others])
            z = z / z.sum()
            zipf_all[i, others] = z
            log_r = log_softmax_1d(s[i, others])
            non = -float(np.sum(z * log_r))
            g_non[others] = np.exp(log_r) * z.sum() - z
        total += alpha * target + beta * non + mu * weak
        grad_s[i] = (alpha * g_target + beta * g_non) / n
        grad_w[i] = mu * g_weak / n
    return total / n, grad_s, grad_w, zipf_all


def inputs(n, c, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g) * scale).requires_grad_()
    w = (torch.randn(n, c, generator=g) * scale).requires_grad_()
    return s, w


def mixup_labels(n, c, seed, same_class_rows=()):
    """mmpretrain-like mixup: lam * onehot(a) + (1 - lam) * onehot(b), one lam for the batch; rows in
    ``same_class_rows`` are mixed with their own class (a one-hot soft label)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, c, (n,), generator=g)
    b = (a + torch.randint(1, c, (n,), generator=g)) % c
    for i in same_class_rows:
        b[i] = a[i]
    lam = 0.7
    return lam * F.one_hot(a, c).double() + (1 - lam) * F.one_hot(b, c).double()


def check_against_reference(s, w, gt, alpha=0.7, beta=0.4, mu=0.3, loss_weight=1.0):
    margins = []
    expected, grad_s, grad_w, _ = reference_uskd(s.detach(), w.detach(), gt, alpha, beta, mu, margins)
    assert min(margins) > 1e-5, 'near-tie of two ranking scores: pick another seed'
    value = USKDLoss(alpha=alpha, beta=beta, mu=mu, loss_weight=loss_weight)(s, w, gt)
    value.backward()
    torch.testing.assert_close(value.double(), torch.tensor(loss_weight * expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.grad.double(), loss_weight * torch.from_numpy(grad_s), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), loss_weight * torch.from_numpy(grad_w), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('n,c,seed', [(6, 5, 0), (16, 10, 1), (12, 100, 11)])
def test_hard_labels_value_and_gradient_match_the_reference(n, c, seed):
    s, w = inputs(n, c, seed)
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed + 100))
    check_against_reference(s, w, y)


@pytest.mark.parametrize('n,c,seed,same', [(6, 5, 3, ()), (16, 10, 4, (2, 9)), (12, 100, 11, (0,))])
def test_mixup_labels_value_and_gradient_match_the_reference(n, c, seed, same):
    s, w = inputs(n, c, seed)
    check_against_reference(s, w, mixup_labels(n, c, seed, same), loss_weight=2.0)


@pytest.mark.parametrize('lead', [20.0, 40.0, 90.0])
def test_labels_holding_nearly_all_the_mass_keep_the_non_target_term_exact(lead):
    """The non-target softmax is a softmax over the kept logits even where the labels hold all but e^-lead of the
    mass: at lead 20 and 40, 1 - p(labels) is lost to float32 rounding (0 at 40), at 90 the kept p_k are below
    float32's smallest numbers. Hard and mixup labels; the labels' logits raised by ``lead``."""
    n, c = 8, 10
    s, w = inputs(n, c, 21)
    gt = mixup_labels(n, c, 22)
    with torch.no_grad():
        s += lead * (gt > 0)
    check_against_reference(s, w, gt)
    s.grad = w.grad = None
    check_against_reference(s, w, gt.argmax(1))


@pytest.mark.parametrize('drop', [30.0, 100.0])
def test_labels_the_student_all_but_rules_out_keep_their_log_probability_exact(drop):
    """A label's log-probability is the log of its softmax only down to p = 1e-20: at e^-100 (below it, a float32
    subnormal) the loss takes a log-softmax, at e^-30 (above) the log of the softmax; both as the reference. Student
    and weak head."""
    n, c = 8, 10
    s, w = inputs(n, c, 23)
    gt = mixup_labels(n, c, 24)
    with torch.no_grad():
        s -= drop * (gt > 0)
        w -= drop * (gt > 0)
    check_against_reference(s, w, gt)
    s.grad = w.grad = None
    check_against_reference(s, w, gt.argmax(1))


@pytest.mark.parametrize('soft', [False, True])
@pytest.mark.parametrize('lead', [0.0, 90.0, -60.0])
def test_an_accelerator_path_without_read_backs_gives_the_same_loss(soft, lead, monkeypatch):
    """Where reading a value back would synchronise with a device, the loss never tests a probability and takes
    the log-softmaxes: the same value and gradients as the CPU's single softmax (and its fallbacks)."""
    import kdplug.losses.functional as functional
    import kdplug.losses.uskd as uskd
    s, w = inputs(16, 12, 25)
    gt = mixup_labels(16, 12, 26) if soft else torch.randint(0, 12, (16,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        s += lead * (F.one_hot(gt, 12) if not soft else (gt > 0)).float()
    results = []
    for cheap in (True, False):
        for module in (uskd, functional):
            monkeypatch.setattr(module, 'reads_are_cheap', lambda x, cheap=cheap: cheap)
        s.grad = w.grad = None
        value = USKDLoss(alpha=0.7, beta=0.4, mu=0.3)(s, w, gt)
        value.backward()
        results.append((value.detach(), s.grad.clone(), w.grad.clone()))
    for on_cpu, on_device in zip(*results):
        torch.testing.assert_close(on_cpu, on_device, rtol=1e-5, atol=1e-7)


def test_soft_labels_keep_both_mixed_classes():
    """Both mixed classes leave the non-target set and enter the target term with their own weights."""
    s, w = inputs(4, 6, 6)
    gt = torch.zeros(4, 6, dtype=torch.float64)
    gt[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 0.6
    gt[torch.arange(4), torch.tensor([5, 4, 5, 5])] = 0.4
    with torch.no_grad():
        from kdplug.losses.uskd import uskd_labels
        labels, weights, active = uskd_labels(gt, 4, 6)
        zipf, dropped = zipf_of(s, w, labels, active)
    keep = torch.ones_like(zipf, dtype=torch.bool).scatter_(1, dropped, False)
    assert labels.tolist() == [[0, 5], [1, 4], [2, 5], [3, 5]] and active.all()
    torch.testing.assert_close(weights, torch.tensor([[0.6, 0.4]] * 4))
    assert keep.sum(1).tolist() == [4] * 4 and (zipf[~keep] == 0).all()
    torch.testing.assert_close(zipf.double(), torch.from_numpy(reference_uskd(s.detach(), w.detach(), gt, 1, 1, 1)[3]))
    # not the argmax: the loss differs from the loss of the first label alone
    assert not torch.allclose(USKDLoss()(s, w, gt), USKDLoss()(s, w, gt.argmax(1)))


def test_one_hot_soft_labels_are_hard_labels():
    s, w = inputs(8, 10, 7)
    y = torch.arange(8) % 10
    torch.testing.assert_close(USKDLoss(alpha=0.5, beta=0.3, mu=0.2)(s, w, F.one_hot(y, 10).float()),
                               USKDLoss(alpha=0.5, beta=0.3, mu=0.2)(s, w, y))


def test_target_ranked_first_leaves_the_non_targets_one_half_to_one_over_c():
    """Their code ranks all C classes: a target ranked first takes rank 1, the others get 1/2, 1/3, 1/4."""
    s = torch.tensor([[5.0, 3.0, 2.0, 1.0]])
    w = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
    labels, active = torch.tensor([[0]]), torch.tensor([[True]])
    zipf, _ = zipf_of(s, w, labels, active)
    expected = torch.tensor([[0.0, 1 / 2, 1 / 3, 1 / 4]])
    torch.testing.assert_close(zipf, expected / expected.sum())  # 6/13, 4/13, 3/13; not 1, 1/2, 1/3 over 11/6


def test_ranking_divides_by_one_minus_the_log_probability_of_the_target():
    """The weak head prefers class 1, the student class 2. Divided by 1 - log p_y (their line 73, ~1.2 here) the
    student's part shrinks and the weak head wins; divided by 1 - p_y (~0.18) the student would win."""
    s = torch.tensor([[0.0, -2.5, -2.0]])
    w = torch.tensor([[0.0, 0.5, -1.5]])
    log_p, p_w = F.log_softmax(s, 1)[0], F.softmax(w, 1)[0]
    # the two readings disagree on this example
    log_denominator = 1 - log_p[0] + 1e-6
    prob_denominator = 1 - log_p[0].exp()
    assert p_w[1] / (1 - p_w[0]) + log_p[1] / log_denominator > p_w[2] / (1 - p_w[0]) + log_p[2] / log_denominator
    assert p_w[1] / (1 - p_w[0]) + log_p[1] / prob_denominator < p_w[2] / (1 - p_w[0]) + log_p[2] / prob_denominator
    zipf, _ = zipf_of(s, w, torch.tensor([[0]]), torch.tensor([[True]]))
    assert zipf[0, 1] > zipf[0, 2]


def test_two_classes_and_two_labels_give_no_non_target_term():
    s, w = inputs(3, 2, 8)
    gt = torch.tensor([[0.6, 0.4]] * 3)
    value = USKDLoss()(s, w, gt)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all() and torch.isfinite(w.grad).all()
    expected, grad_s, _, _ = reference_uskd(s.detach(), w.detach(), gt.double(), 1.0, 0.1, 0.005)
    torch.testing.assert_close(value.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.grad.double(), torch.from_numpy(grad_s), rtol=1e-4, atol=1e-6)


def test_empty_batch_gives_zero_in_the_graph():
    s = torch.zeros(0, 10, requires_grad=True)
    value = USKDLoss()(s, torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0 and value.requires_grad
    assert USKDLoss()(s, torch.zeros(0, 10), torch.zeros(0, 10)).item() == 0.0
