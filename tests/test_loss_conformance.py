"""One conformance test for every loss that any plugin registered (kdplug's own and third-party ones)."""
import pytest
import torch

from kdplug.plugins import plugin_infos
from kdplug.registry import MODELS


def registered_losses():
    return sorted(name for info in plugin_infos() for name in info.contributions.get('kdplug_losses', []))


@pytest.fixture(params=registered_losses())
def loss(request):
    return MODELS.build(dict(type=request.param))


def student_and_teacher(n, c, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g) * 3).to(dtype).requires_grad_()
    t = (torch.randn(n, c, generator=g) * 3).to(dtype).requires_grad_()
    return s, t, torch.randint(0, c, (n,), generator=g)


def test_every_builtin_loss_is_registered():
    assert {'KDLoss', 'DKDLoss', 'NKDLoss', 'NormKDLoss', 'MultiTempKDLoss'} <= set(registered_losses())


@pytest.mark.parametrize('n,c', [(8, 10), (1, 10), (3, 1000)])
def test_finite_scalar_and_gradient_reaches_the_student_only(loss, n, c):
    s, t, y = student_and_teacher(n, c)
    value = loss(s, t, y)
    assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    if getattr(type(loss), 'teacher_based', True):
        assert t.grad is None


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_a_float32_finite_loss(loss, dtype):
    s, t, y = student_and_teacher(16, 100, dtype)
    s.data[0] = torch.linspace(-60, 60, 100).to(dtype)  # a confident row: log(0) traps in low precision
    value = loss(s, t, y)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(s.grad.float()).all()


@pytest.mark.parametrize('which', ['student', 'teacher', 'both'])
def test_constant_logits_never_give_nan_or_inf(loss, which):
    s, t, y = student_and_teacher(4, 10)
    if which in ('student', 'both'):
        s = torch.full((4, 10), 2.5, requires_grad=True)
    if which in ('teacher', 'both'):
        t = torch.zeros(4, 10)
    value = loss(s, t, y)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(s.grad).all()


def test_an_empty_batch_gives_zero_in_the_graph(loss):
    """No rows (an image without RoIs, a batch whose teacher rows were all left out): 0, still in the graph, so
    every rank's backward runs, and a zero gradient of the right shape."""
    s = torch.zeros(0, 10, requires_grad=True)
    value = loss(s, torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert s.grad is not None and s.grad.shape == (0, 10)


@pytest.mark.parametrize('n,c', [(4, 1), (0, 0)])
def test_fewer_than_two_classes_is_refused_not_a_silent_zero(loss, n, c):
    """A softmax over one class is 1 whatever its logit: every loss would be 0 (USKD divided by C = 0)."""
    s, t = torch.zeros(n, c, requires_grad=True), torch.zeros(n, c)
    with pytest.raises(ValueError, match='needs at least 2 classes.*check num_classes'):
        loss(s, t, torch.zeros(n, dtype=torch.long))
