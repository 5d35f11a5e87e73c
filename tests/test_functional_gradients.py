"""The hand-written backward passes of the losses (the per-row std, the KL of softened logits with NormKD's and
CTKD's temperatures, DKD's, NKD's and USKD's terms, MLKD's Gram terms) give the gradients of their formulas:
float64 gradchecks, and values and gradients against the same formulas written with autograd. The CPU's sort of
USKD's ranking gives torch's stable order."""
import pytest
import torch
import torch.nn.functional as F

from kdplug.losses.functional import SPREAD_FLOOR, descending_order, row_std, softened_kl_rows


def test_the_per_row_std_has_the_gradient_of_its_formula():
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(row_std, (x,))
    assert torch.allclose(row_std(x), x.std(dim=-1, keepdim=True))


def test_a_constant_row_has_std_zero_and_gradient_zero():
    x = torch.cat([torch.full((1, 5), 3.0), torch.randn(1, 5)]).requires_grad_()
    std = row_std(x)
    assert std[0].item() == 0.0
    std.sum().backward()
    assert torch.equal(x.grad[0], torch.zeros(5)) and x.grad[1].abs().sum() > 0


def softened_kl_with_autograd(s, t_s, t, t_t):
    log_p, log_q = F.log_softmax(t / t_t, dim=-1), F.log_softmax(s / t_s, dim=-1)
    p = log_p.exp()
    return torch.where(p == 0, torch.zeros_like(p), p * (log_p - log_q)).sum(-1)


def test_the_softened_kl_has_the_gradient_of_its_formula():
    s = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 9, dtype=torch.float64)
    t_s = (torch.rand(5, 1, dtype=torch.float64) + 0.5).requires_grad_()
    t_t = (torch.rand(5, 1, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, t_s, t_t: softened_kl_rows(s, t_s, t / t_t, t_t), (s, t_s, t_t))
    shared = (torch.rand(5, 1, dtype=torch.float64) + 0.5).requires_grad_()  # CTKD: one T for both models
    assert torch.autograd.gradcheck(lambda s, shared: softened_kl_rows(s, shared, t / shared, shared), (s, shared))
    assert torch.allclose(softened_kl_rows(s, t_s, t / t_t, t_t), softened_kl_with_autograd(s, t_s, t, t_t))


def test_a_class_the_teacher_rules_out_adds_zero_to_the_softened_kl_and_its_gradient():
    s = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 6, dtype=torch.float64)
    t[1, 2] = t[3, 0] = float('-inf')  # probability exactly 0: 0 log 0 = 0
    t_s = (torch.rand(4, 1, dtype=torch.float64) + 0.5).requires_grad_()
    t_t = (torch.rand(4, 1, dtype=torch.float64) + 0.5).requires_grad_()
    kl = softened_kl_rows(s, t_s, t / t_t, t_t)
    assert torch.isfinite(kl).all()
    assert torch.allclose(kl, softened_kl_with_autograd(s, t_s, t, t_t))
    assert torch.autograd.gradcheck(lambda s, t_s, t_t: softened_kl_rows(s, t_s, t / t_t, t_t), (s, t_s, t_t))
    nan_teacher = t.clone()
    nan_teacher[0, 1] = float('nan')  # a broken teacher is not hidden
    assert softened_kl_rows(s, t_s, nan_teacher / t_t, t_t)[0].isnan()


def test_normkd_value_and_gradient_match_the_formula_written_with_autograd():
    from kdplug.losses import NormKDLoss
    torch.manual_seed(0)
    s = (3 * torch.randn(64, 100)).requires_grad_()
    t = 3 * torch.randn(64, 100)
    loss = NormKDLoss(t_norm=2.0)(s, t)
    loss.backward()
    s_ref = s.detach().clone().requires_grad_()
    t_s = 2.0 * s_ref.std(dim=-1, keepdim=True).clamp_min(SPREAD_FLOOR)
    t_t = 2.0 * t.std(dim=-1, keepdim=True).clamp_min(SPREAD_FLOOR)
    log_q, log_p = F.log_softmax(s_ref / t_s, dim=-1), F.log_softmax(t / t_t, dim=-1)
    reference = (t_t.squeeze(-1) ** 2 * (log_p.exp() * (log_p - log_q)).sum(-1)).mean()
    reference.backward()
    assert torch.allclose(loss, reference, rtol=1e-5)
    assert torch.allclose(s.grad, s_ref.grad, rtol=1e-4, atol=1e-9)


def test_a_row_far_from_zero_keeps_its_std_and_gradient():
    # the std's one-pass sums lose digits to cancellation when the mean dwarfs the spread: such rows are centred
    x = torch.randn(4, 50)
    for offset in (0.0, 30.0, 1e4):
        shifted = (x + offset).requires_grad_()
        exact = shifted.detach().double()  # float32 rounds x + offset: the reference is the std of what was given
        assert torch.allclose(row_std(shifted), exact.std(dim=-1, keepdim=True).float(), rtol=1e-5)
        row_std(shifted).sum().backward()
        expected = (exact - exact.mean(dim=-1, keepdim=True)) / (49 * exact.std(dim=-1, keepdim=True))
        # atol: the float32 mean of 50 numbers near 1e4 is off by ~1e-3, 1e-5 in the gradient (torch.std's too)
        assert torch.allclose(shifted.grad.double(), expected, rtol=1e-3, atol=3e-5)


def test_normkd_temperature_formed_with_the_kl_has_the_gradient_of_its_formula():
    from kdplug.losses.functional import Temperature
    torch.manual_seed(1)
    s = torch.randn(6, 9, dtype=torch.float64)
    s[1] += 40.0          # a row far from zero: its std is taken from the centred row
    s[2] = 3.0 + 1e-4 * torch.randn(9, dtype=torch.float64)  # spread below SPREAD_FLOOR: the floor, no std gradient
    s.requires_grad_()
    t = 3 * torch.randn(6, 9, dtype=torch.float64)
    temperature = Temperature(t_norm=2.0)
    scaled_teacher, t_teacher = temperature.soften(t)  # centred: the same softmax
    assert torch.allclose(t_teacher, temperature(t))
    assert torch.autograd.gradcheck(lambda s: softened_kl_rows(s, temperature, scaled_teacher, t_teacher), (s,))
    expected = softened_kl_with_autograd(s, 2.0 * s.std(dim=-1, keepdim=True).clamp_min(SPREAD_FLOOR), t, t_teacher)
    assert torch.allclose(softened_kl_rows(s, temperature, scaled_teacher, t_teacher), expected)


@pytest.mark.parametrize('t_norm', [None, 2.0])
@pytest.mark.parametrize('classes', [2, 7])
def test_dkd_and_nkd_terms_have_the_gradients_of_their_formulas(t_norm, classes):
    from kdplug.losses.dkd import dkd_terms
    from kdplug.losses.functional import Temperature
    from kdplug.losses.nkd import nkd_per_sample
    torch.manual_seed(classes)
    s = (2 * torch.randn(5, classes, dtype=torch.float64)).requires_grad_()
    t = 2 * torch.randn(5, classes, dtype=torch.float64)
    y = torch.randint(0, classes, (5,))
    temperature = Temperature(3.0 if t_norm is None else None, t_norm)
    assert torch.autograd.gradcheck(lambda s: torch.stack(dkd_terms(s, t, y, temperature)[:2]), (s,))
    assert torch.autograd.gradcheck(lambda s: nkd_per_sample(s, t, y, temperature, gamma=1.5), (s,))


def test_a_class_the_teacher_rules_out_leaves_dkd_and_nkd_finite():
    from kdplug.losses import DKDLoss, NKDLoss
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6)
    t[0, 3] = t[2, 1] = float('-inf')  # probability exactly 0 for the teacher
    y = torch.tensor([0, 2, 3, 5])
    for loss in (DKDLoss(), NKDLoss(), DKDLoss(t_norm=2.0)):
        s.grad = None
        if loss.temperature.t_norm is not None:  # NormKD's std of a row with -inf is not a temperature
            t = torch.where(torch.isinf(t), torch.full_like(t, -30.0), t)
        value = loss(s, t, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all(), type(loss).__name__


def uskd_with_autograd(s, w, target, alpha, beta, mu):
    """USKD written with autograd: the detached parts (the target weights q, the Zipf labels) under no_grad."""
    from kdplug.losses.uskd import uskd_labels, zipf_non_target_labels
    labels, weights, active = uskd_labels(target, *s.shape)
    log_p = F.log_softmax(s, dim=-1)
    log_p_label = log_p.gather(1, labels)
    with torch.no_grad():
        squared = log_p_label.exp().pow(2)
        column_mean = (squared * active).sum(0) / active.sum(0).clamp_min(1)
        q = torch.where(active & (weights > 0), squared + weights.to(s) - column_mean, torch.zeros_like(squared))
    log_p_weak = F.log_softmax(w, dim=-1)
    zipf, dropped = zipf_non_target_labels(log_p.detach(), log_p_weak.detach().exp(), labels, active)
    log_kept = F.log_softmax(s.scatter(1, dropped, -1e30), dim=-1)
    smoothed = 0.1 / s.shape[1] + 0.9 * (target.to(s) if target.dim() == 2 else F.one_hot(target, s.shape[1]).to(s))
    return (-alpha * (q * log_p_label).sum(-1) - beta * (zipf * log_kept).sum(-1)
            - mu * (smoothed * log_p_weak).sum(-1))


@pytest.mark.parametrize('soft', [False, True])
@pytest.mark.parametrize('classes', [2, 7])
def test_uskd_terms_have_the_gradients_of_their_formulas(soft, classes):
    """Student and weak head both, against autograd (the batch mean in the target weights and the Zipf labels are
    detached, as in the authors' code, so a numerical gradcheck does not apply); soft labels of two classes (0.6 and
    0.3: their sum enters the weak head's gradient) and C = 2, where two labels leave no non-target class."""
    from kdplug.losses.uskd import uskd_per_sample
    torch.manual_seed(classes)
    s = (2 * torch.randn(5, classes, dtype=torch.float64)).requires_grad_()
    w = (2 * torch.randn(5, classes, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, classes, (5,))
    if soft:
        y = 0.6 * F.one_hot(y, classes).double() + 0.3 * F.one_hot((y + 1) % classes, classes).double()
    upstream = torch.rand(5, dtype=torch.float64)
    results = []
    for fn in (uskd_per_sample, uskd_with_autograd):
        value = fn(s, w, y, alpha=1.0, beta=0.5, mu=0.3)
        results.append((value.detach(), *torch.autograd.grad(value, (s, w), upstream)))
    for written_out, autograd in zip(*results):
        torch.testing.assert_close(written_out, autograd, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('n,c', [(5, 8), (8, 5)])  # fewer samples than classes (N x N Grams only), and more
@pytest.mark.parametrize('weighted', [False, True])
def test_mlkd_gram_terms_have_the_values_and_gradients_of_their_formulas(n, c, weighted):
    """sum_ab (P_t P_t^T - P_s P_s^T)_ab^2 w_b and sum_cd (P_t^T P_t - P_s^T P_s)_cd^2 k_d, for any column weights
    (the corrected MLKD's 0 / 1 masks are a case), with a left-out row: the Grams subtracted plainly here."""
    from kdplug.losses.mlkd import gram_terms
    torch.manual_seed(n)
    s = (2 * torch.randn(n, c, dtype=torch.float64)).requires_grad_()
    t = 2 * torch.randn(n, c, dtype=torch.float64)
    keep = torch.ones(n, dtype=torch.float64)
    keep[1] = 0.0
    w = torch.rand(n, dtype=torch.float64) if weighted else torch.ones(n, dtype=torch.float64)
    k = torch.rand(c, dtype=torch.float64) if weighted else torch.ones(c, dtype=torch.float64)
    p_s, p_t = F.softmax(s / 3.0, dim=-1) * keep[:, None], F.softmax(t / 3.0, dim=-1) * keep[:, None]
    batch = ((p_t @ p_t.t() - p_s @ p_s.t()).square() * w).sum()
    classes = ((p_t.t() @ p_t - p_s.t() @ p_s).square() * k).sum()
    weights = (w, k) if weighted else ()
    torch.testing.assert_close(torch.stack(gram_terms(s, t, 3.0, keep, *weights)), torch.stack([batch, classes]),
                               rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x: torch.stack(gram_terms(x, t, 3.0, keep, *weights)), (s,))


def test_the_cpu_sort_gives_torchs_stable_descending_order():
    """Ties go to the lower index (constant rows, repeated values, -0.0 and +0.0), infinities and the smallest
    subnormals keep their places, a NaN leaves the order to torch, an empty batch has an empty order."""
    torch.manual_seed(0)
    special = [0.0, -0.0, 1.0, -1.0, float('inf'), float('-inf'), 1e-45, -1e-45, 3e38, -3e38]
    cases = [torch.randn(64, 1000), torch.zeros(3, 7), torch.randint(0, 3, (50, 20)).float(), torch.randn(0, 5),
             torch.tensor([special, special[::-1]]), torch.tensor([[1.0, float('nan'), -float('nan'), 2.0]])]
    for score in cases:
        assert torch.equal(descending_order(score), score.argsort(dim=-1, descending=True, stable=True)), score


@pytest.mark.parametrize('name', ['KDLoss', 'NormKDLoss', 'CTKDLoss', 'DKDLoss', 'NKDLoss', 'USKDLoss'])
def test_the_accelerator_path_gives_the_cpu_paths_values_and_gradients(name, monkeypatch):
    """On an accelerator the losses always centre the std and mask 0 log 0 (no test read back from the device);
    forced here on the CPU, with logits on which the CPU takes its shortcuts (the std from two sums, no mask): the
    same values and gradients."""
    import kdplug.losses.functional as functional
    from kdplug.losses import DKDLoss, KDLoss, NKDLoss, NormKDLoss, USKDLoss  # noqa: F401
    from kdplug.losses.ctkd import CTKDLoss  # noqa: F401
    torch.manual_seed(3)
    s, t, y = 3 * torch.randn(16, 10), 3 * torch.randn(16, 10), torch.randint(0, 10, (16,))
    loss = eval(name)()
    if name == 'CTKDLoss':  # the temperature learns: its teacher-side gradient is taken too
        loss.temperature.grl_lambda = 1.0
    results = []
    for cheap in (True, False):
        monkeypatch.setattr(functional, 'reads_are_cheap', lambda x, cheap=cheap: cheap)
        student = s.clone().requires_grad_()
        value = loss(student, t, y)
        value.backward()
        grads = [student.grad] + [p.grad.clone() for p in loss.parameters()]
        loss.zero_grad()
        results.append((value.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for accelerator, cpu in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(accelerator, cpu, rtol=1e-4, atol=1e-6)
