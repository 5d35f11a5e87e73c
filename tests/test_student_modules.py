"""Every student-side module a plugin registers (``kdplug_student_modules``), kdplug's own included, through one
conformance test of its kind.

The contract (docs/letkd.md, "Student-side modules as plugins"; kdplug/distillers/distiller.py): a layer keeps the
shape of the feature it is inserted on, so the backbone around it is unchanged; a student-module loss (it has a
``student_module``) is called as ``loss(layer, teacher_feature, target)`` and returns a dict whose ``'loss'`` is a
finite scalar whose gradient reaches the layer, its other values detached diagnostics. A module registered without
an example here fails the test that lists them.
"""
from typing import Callable, Dict

import pytest
import torch
from torch import nn

CHANNELS, TEACHER_CHANNELS, CLASSES, SUBCLASSES = 8, 6, 3, 2


def penultimate_example() -> dict:
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.letkd.loss import LetKDPenultimateLoss
    loss = LetKDPenultimateLoss('out', temperature=2.0)
    loss.load_codewords(dict(level='penultimate', codewords=torch.randn(5, TEACHER_CHANNELS)))
    return dict(layer=LetKDLayer(CHANNELS, 5), loss=loss)


def intermediate_example() -> dict:
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.letkd.loss import LetKDIntermediateLoss
    loss = LetKDIntermediateLoss('layer2')
    k = CLASSES * SUBCLASSES
    loss.load_codewords(dict(level='intermediate', lda_weight=torch.randn(4, TEACHER_CHANNELS),
                             lda_bias=torch.randn(4), prototypes=torch.randn(k, 4),
                             valid=torch.ones(k, dtype=torch.bool), scores=torch.softmax(torch.randn(k, k), dim=1),
                             subclasses=SUBCLASSES))
    return dict(layer=LetKDLayer(CHANNELS, k), loss=loss)


def layer_example() -> dict:
    from kdplug.letkd.layer import LetKDLayer
    return dict(layer=LetKDLayer(CHANNELS, 5))


#: The class name a plugin registers -> an example: a layer and, for a loss, the loss ready to run on it.
EXAMPLES: Dict[str, Callable[[], dict]] = {
    'LetKDLayer': layer_example,
    'LetKDPenultimateLoss': penultimate_example,
    'LetKDIntermediateLoss': intermediate_example,
}
LOSSES = sorted(name for name, example in EXAMPLES.items() if 'loss' in example())


def registered() -> set:
    from kdplug.plugins import plugin_infos
    return {name for info in plugin_infos() for name in info.contributions.get('kdplug_student_modules', [])}


def test_every_registered_student_module_has_a_conformance_example():
    modules = registered()
    assert {'LetKDLayer', 'LetKDPenultimateLoss', 'LetKDIntermediateLoss'} <= modules
    missing = sorted(modules - set(EXAMPLES))
    assert not missing, f'the student modules {missing} are registered without an example: not held to the contract'


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_a_layer_keeps_the_shape_of_the_feature_it_is_inserted_on(name):
    torch.manual_seed(0)
    layer = EXAMPLES[name]()['layer'].train()
    feature = torch.randn(2, CHANNELS, 4, 4, requires_grad=True)
    out = layer(feature)
    assert out.shape == feature.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert feature.grad is not None and torch.isfinite(feature.grad).all()  # the backbone below still learns


@pytest.mark.parametrize('name', LOSSES)
def test_a_student_module_loss_gives_a_finite_loss_that_trains_its_layer(name):
    torch.manual_seed(0)
    example = EXAMPLES[name]()
    layer, loss = example['layer'].train(), example['loss']
    assert type(loss).__name__ == name and isinstance(loss, nn.Module)
    assert isinstance(getattr(loss, 'student_module', None), str)  # how the distiller tells it from a logit loss
    layer(torch.randn(2, CHANNELS, 4, 4))
    result = loss(layer, torch.randn(2, TEACHER_CHANNELS, 4, 4), torch.tensor([0, 2]))
    if not isinstance(result, dict):  # a scalar, or {'loss': scalar, diagnostics...}
        result = {'loss': result}
    value = result['loss']
    assert value.shape == () and torch.isfinite(value) and value > 0
    assert all(not v.requires_grad for key, v in result.items() if key != 'loss')  # diagnostics only
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
