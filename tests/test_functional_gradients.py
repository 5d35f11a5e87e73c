"""The hand-written backward passes of kdplug/losses/functional.py (the per-row std, the division by a per-row
temperature) give the gradients of their formulas: float64 gradcheck, and NormKD's gradient against the same loss
written with autograd through torch.std."""
import torch
import torch.nn.functional as F

from kdplug.losses.functional import SPREAD_FLOOR, divide_rows, row_std


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


def test_dividing_by_a_per_row_temperature_has_the_gradient_of_the_division():
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(5, 1, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(divide_rows, (x, t))
    constant = torch.full((5, 1), 4.0, dtype=torch.float64)  # a fixed temperature: a plain division
    assert torch.equal(divide_rows(x, constant), x / constant)


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
