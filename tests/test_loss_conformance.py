"""One conformance test for every loss that any plugin registered (kdplug's own and third-party ones), and for the
loss of the example third-party plugin that docs/plugins.md points authors to."""
import importlib.util
import inspect
import re

import pytest
import torch

from conftest import REPO
from kdplug.plugins import plugin_infos
from kdplug.registry import MODELS

EXAMPLE_LOSS = REPO / 'examples' / 'kdplug-example-plugin' / 'kdplug_example' / 'reverse_kd.py'


def registered_losses():
    return sorted(name for info in plugin_infos() for name in info.contributions.get('kdplug_losses', []))


def example_loss() -> type:
    """The example plugin's ReverseKDLoss, loaded from its file (not installed: its entry point would change what
    every other test sees registered)."""
    spec = importlib.util.spec_from_file_location('kdplug_example_reverse_kd', EXAMPLE_LOSS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReverseKDLoss


@pytest.fixture(params=registered_losses() + ['example plugin: ReverseKDLoss'])
def loss(request):
    """Each loss built from its defaults, as a config that names only its type builds it."""
    return example_loss()() if request.param.startswith('example') else MODELS.build(dict(type=request.param))


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


def test_a_row_of_weight_zero_is_left_out_and_weights_of_one_change_nothing(loss):
    """Row weights are how a task's background policy and the distiller's non-finite teacher rows reach a loss:
    weight 0 must remove the row (its value and its gradient), all-ones must be the unweighted loss. A loss without
    ``weight`` is refused where rows are weighed (the distiller's check)."""
    if 'weight' not in inspect.signature(loss.forward).parameters:
        pytest.skip(f'{type(loss).__name__} takes no row weights')
    s, t, y = student_and_teacher(6, 10)
    torch.testing.assert_close(loss(s, t, y, weight=torch.ones(6)), loss(s, t, y))
    weighted = loss(s, t, y, weight=torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(weighted, loss(s[:5], t[:5], y[:5]))
    weighted.backward()
    assert s.grad[5].abs().max() == 0 and s.grad[:5].abs().max() > 0


def test_row_weights_of_another_shape_or_negative_are_refused(loss):
    """An (N, 1) or (1,) weight broadcast into another loss (4x the value for N = 4), a negative one rewarded the
    loss (-1e8 for [1, -1, 1, -1]), one too many failed in torch's words: each is named."""
    if 'weight' not in inspect.signature(loss.forward).parameters:
        pytest.skip(f'{type(loss).__name__} takes no row weights')
    s, t, y = student_and_teacher(4, 10)
    for weight in (torch.ones(4, 1), torch.ones(1), torch.ones(5)):
        with pytest.raises(ValueError, match=rf'weight of shape {re.escape(str(tuple(weight.shape)))}'):
            loss(s, t, y, weight=weight)
    for bad in (-1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='weights must be finite and >= 0'):
            loss(s, t, y, weight=torch.tensor([1.0, bad, 1.0, 1.0]))
