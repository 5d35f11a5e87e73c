"""One conformance test for every loss that any plugin registered (kdplug's own and third-party ones), and for the
loss of the example third-party plugin that docs/plugins.md points authors to."""
import importlib.util

import pytest
import torch

from conftest import REPO
from kdplug import testing
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


def test_every_builtin_loss_is_registered():
    assert {'KDLoss', 'DKDLoss', 'NKDLoss', 'NormKDLoss', 'MultiTempKDLoss'} <= set(registered_losses())


# each property of the contract is one check of kdplug.testing, the helpers a plugin's own tests call
# (kdplug.testing.check_logit_loss runs them all)
def test_finite_scalar_and_gradient_reaches_the_student_only(loss):
    testing.check_loss_value_and_gradient(loss)


def test_half_precision_inputs_give_a_float32_finite_loss(loss):
    testing.check_loss_half_precision(loss)


def test_constant_logits_never_give_nan_or_inf(loss):
    testing.check_loss_constant_logits(loss)


def test_an_empty_batch_gives_zero_in_the_graph(loss):
    testing.check_loss_empty_batch(loss)


def test_fewer_than_two_classes_is_refused_not_a_silent_zero(loss):
    testing.check_loss_refuses_fewer_than_two_classes(loss)
    if type(loss).__module__.startswith('kdplug.'):  # kdplug's own say what to check (a plugin's, its own words)
        with pytest.raises(ValueError, match='needs at least 2 classes.*check num_classes'):
            loss(torch.zeros(4, 1, requires_grad=True), torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))


def test_a_row_of_weight_zero_is_left_out_and_bad_row_weights_are_refused(loss):
    testing.check_loss_row_weights(loss)


def test_the_contract_has_a_test_for_each_of_its_checks():
    """A check added to kdplug.testing.LOGIT_LOSS_CHECKS runs in this file too."""
    source = open(__file__).read()
    assert all(f'testing.{check.__name__}(loss)' in source for check in testing.LOGIT_LOSS_CHECKS)


class KL(torch.nn.Module):
    """KD at T = 1 with row weights, correct: the base of the broken losses below."""

    def per_row(self, student_logits, teacher_logits):
        from kdplug.losses.functional import check_logits
        student_logits, teacher_logits = check_logits(student_logits, teacher_logits)
        q = teacher_logits.softmax(-1)
        return (q * (q.clamp_min(1e-30).log() - student_logits.log_softmax(-1))).sum(-1)

    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        from kdplug.losses.functional import reduce_per_sample
        return reduce_per_sample(self.per_row(student_logits, teacher_logits), weight)


class Swapped(KL):
    def forward(self, teacher_logits, student_logits, target=None, weight=None):
        return super().forward(student_logits.detach(), teacher_logits.detach(), target, weight)


class Detached(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return super().forward(student_logits.detach(), teacher_logits, target, weight)


class Float64(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return super().forward(student_logits, teacher_logits, target, weight).double()


class IgnoresWeight(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return super().forward(student_logits, teacher_logits, target)


class NaNOnConstantLogits(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        spread = student_logits.float().std(-1, keepdim=True)  # 0 for a constant row: 0 / 0
        return super().forward(student_logits / spread, teacher_logits, target, weight)


class NoClassCheck(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        from kdplug.losses.functional import reduce_per_sample
        q = teacher_logits.detach().float().softmax(-1)  # no check_logits: a softmax over 1 class is 1
        return reduce_per_sample((q * (q.clamp_min(1e-30).log() - student_logits.float().log_softmax(-1))).sum(-1),
                                 weight)


@pytest.mark.parametrize('broken,message', [
    (Swapped, 'carries no gradient'), (Detached, 'carries no gradient'), (Float64, 'float64: a float32 value'),
    (IgnoresWeight, 'a row of weight 0 is not left out'), (NaNOnConstantLogits, 'constant student logits'),
    (NoClassCheck, 'C = 1: not refused'),
])
def test_the_contract_names_what_a_broken_loss_breaks(broken, message):
    """kdplug.testing.check_logit_loss, which a plugin's tests call, fails each broken loss on its defect."""
    testing.check_logit_loss(KL())
    with pytest.raises(AssertionError, match=message):
        testing.check_logit_loss(broken())


class OwnWords(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        if student_logits.shape[-1] < 2:
            raise ValueError(f'OwnWords: got {student_logits.shape[-1]} class(es), a softmax needs two or more')
        return super().forward(student_logits, teacher_logits, target, weight)


class MeanOfWeighted(KL):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        per_row = self.per_row(student_logits, teacher_logits)
        return (per_row * (1 if weight is None else weight)).mean()


def test_the_contract_reports_every_broken_property_and_takes_a_loss_s_own_words():
    """A correct loss refusing C < 2 in its own words failed on kdplug's wording, and check_logit_loss stopped at the
    first failure: (w * l).mean(), NaN on an empty batch and wrong with row weights, showed one defect of two."""
    testing.check_logit_loss(OwnWords())
    with pytest.raises(AssertionError, match=r'(?s)MeanOfWeighted breaks 2 of the 6 properties.*'
                                             r'check_loss_empty_batch: .*nan.*check_loss_row_weights: .*not left out'):
        testing.check_logit_loss(MeanOfWeighted())
    with pytest.raises(TypeError, match=r"pass a built loss \(KL\(\)\) or its config \(dict\(type='KL'\)\)"):
        testing.check_logit_loss(KL)
