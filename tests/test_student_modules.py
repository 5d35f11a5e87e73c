"""kdplug's student-side modules (``kdplug_student_modules``) through one conformance test of their kind.

The contract (docs/letkd.md, "Student-side modules as a plugin kind"; kdplug.testing.check_student_module): a layer
keeps the shape of the feature it is inserted on, so the backbone around it is unchanged; a student-module
loss (it has a ``student_module``) is called as ``loss(layer, teacher_feature, target)`` and returns a finite scalar
(or a dict of it and detached diagnostics) whose gradient reaches the layer. A module of kdplug's registered without
an example here fails the test that lists them.
"""
from typing import Callable, Dict

import pytest
import torch

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


def registered() -> set:
    """kdplug's own student-side modules; a plugin's are held to the contract by its own tests (kdplug.testing)."""
    from kdplug.plugins import BUILTIN_PLUGINS, plugin_infos
    return {name for info in plugin_infos() if info.module in BUILTIN_PLUGINS
            for name in info.contributions.get('kdplug_student_modules', [])}


def test_every_registered_student_module_has_a_conformance_example():
    modules = registered()
    assert {'LetKDLayer', 'LetKDPenultimateLoss', 'LetKDIntermediateLoss'} <= modules
    missing = sorted(modules - set(EXAMPLES))
    assert not missing, f'the student modules {missing} are registered without an example: not held to the contract'


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_a_student_module_keeps_the_feature_shape_and_its_loss_trains_it(name):
    from kdplug.testing import check_student_module
    torch.manual_seed(0)
    example = EXAMPLES[name]()
    loss = example.get('loss')
    assert loss is None or type(loss).__name__ == name
    check_student_module(example['layer'], torch.randn(2, CHANNELS, 4, 4), loss,
                         torch.randn(2, TEACHER_CHANNELS, 4, 4), torch.tensor([0, 2]))
