"""CTKD (Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023, arXiv:2211.16231), alone and with
logit standardization, against formulas written here in float64 numpy, independently of kdplug's code: the KD at the
learned temperature, the gradient reversal on the temperature, the cosine curriculum of lambda (checked against the
values the authors' own training logged), the hook, and the temperature's place in a distiller (optimizer, state)."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from kdplug.engine.hooks import CTKDCurriculumHook
from kdplug.losses import KDLoss
from kdplug.losses.ctkd import CTKDLoss, LearnableTemperature, cosine_curriculum, reverse_gradient
from kdplug.losses.functional import Temperature
from kdplug.registry import MODELS


def logits(n=6, c=10, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale


# -- float64 references, from the paper's formulas ------------------------------------------------------------------
def np_log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def np_softmax(x):
    return np.exp(np_log_softmax(x))


def np_zscore(x):
    """Logit standardization as the LS authors compute it: (x - mean) / (1e-7 + unbiased std)."""
    return (x - x.mean(axis=1, keepdims=True)) / (1e-7 + x.std(axis=1, ddof=1, keepdims=True))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def tolerance(weight):
    """float32 log-probabilities carry an absolute error of a few 1e-7, which a KL row keeps and the loss multiplies
    by its weight (loss_weight * T^2): the bound of tests/test_loss_reference.py, 1e-5 + 2e-6 per unit of weight."""
    return 1e-5 + 2e-6 * weight


def reference_loss(s, t, temperatures, zscore=False):
    """1/N sum_i T_i^2 KL(softmax(t_i / T_i) || softmax(s_i / T_i)), float64; ``temperatures`` (N,)."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    if zscore:
        s, t = np_zscore(s), np_zscore(t)
    T = np.asarray(temperatures, np.float64).reshape(-1, 1)
    log_p, log_q = np_log_softmax(t / T), np_log_softmax(s / T)
    return float(np.mean(T[:, 0] ** 2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=1)))


def reference_student_gradient(s, t, temperatures):
    """d/ds of the loss above (raw logits): T_i (softmax(s_i / T_i) - softmax(t_i / T_i)) / N."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    T = np.asarray(temperatures, np.float64).reshape(-1, 1)
    return T * (np_softmax(s / T) - np_softmax(t / T)) / s.shape[0]


def reference_mlp_temperatures(loss, s, t, zscore=False):
    """The instance-wise T_i = t_start + t_range * sigmoid(MLP([softmax(t_i), softmax(s_i)])), from the weights."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    if zscore:
        s, t = np_zscore(s), np_zscore(t)
    (w1, b1), (w2, b2) = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
                          for m in loss.temperature.mlp if isinstance(m, nn.Linear)]
    x = np.concatenate([np_softmax(t), np_softmax(s)], axis=1)
    out = np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2
    return loss.temperature.t_start + loss.temperature.t_range * sigmoid(out[:, 0])


# -- the KD at the learned temperature ------------------------------------------------------------------------------
@pytest.mark.parametrize('logit_norm', [None, 'zscore'])
@pytest.mark.parametrize('t_start,t_range', [(1.0, 20.0), (2.0, 20.0), (0.5, 3.0)])
@pytest.mark.parametrize('theta', [1.0, -2.0, 3.5])
@pytest.mark.parametrize('scale', [0.1, 1.0, 10.0])
def test_global_ctkd_is_kd_at_the_learned_temperature(logit_norm, t_start, t_range, theta, scale):
    loss = CTKDLoss(t_start=t_start, t_range=t_range, logit_norm=logit_norm, loss_weight=0.9)
    with torch.no_grad():
        loss.temperature.global_t.fill_(theta)
    s, t = logits(scale=scale, seed=1), logits(scale=scale, seed=2)
    T = t_start + t_range * sigmoid(theta)
    expected = 0.9 * reference_loss(s, t, [T] * 6, zscore=logit_norm == 'zscore')
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-4, abs=tolerance(0.9 * T ** 2))


def test_the_authors_initial_temperature():
    """global_T = ones(1) and T = 1 + 20 sigmoid(global_T) (models/temp_global.py line 13, helper/loops.py line 134)."""
    temperature = CTKDLoss().temperature
    assert temperature.global_t.item() == 1.0
    T = temperature(logits(), logits(seed=1))
    assert T.shape == (6, 1)
    torch.testing.assert_close(T, torch.full((6, 1), 1 + 20 / (1 + math.exp(-1))))


@pytest.mark.parametrize('logit_norm', [None, 'zscore'])
def test_instance_ctkd_is_kd_at_each_samples_temperature(logit_norm):
    torch.manual_seed(0)
    loss = CTKDLoss(mode='instance', num_classes=10, hidden_channels=16, logit_norm=logit_norm)
    with torch.no_grad():  # spread the MLP's outputs so that the samples' temperatures differ clearly
        loss.temperature.mlp[2].weight.mul_(30.0)
    s, t = logits(scale=3.0, seed=3), logits(scale=3.0, seed=4)
    temperatures = reference_mlp_temperatures(loss, s, t, zscore=logit_norm == 'zscore')
    assert temperatures.max() - temperatures.min() > 0.5
    expected = reference_loss(s, t, temperatures, zscore=logit_norm == 'zscore')
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-4, abs=tolerance(temperatures.max() ** 2))


# -- the gradient reversal ------------------------------------------------------------------------------------------
def test_reverse_gradient_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(5, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(5.0))


@pytest.mark.parametrize('strength', [0.0, 0.25, 1.0])
@pytest.mark.parametrize('logit_norm', [None, 'zscore'])
def test_the_temperature_gets_minus_lambda_times_the_loss_gradient(strength, logit_norm):
    """d loss / d theta by central differences on the float64 reference; the parameter receives -lambda times it.
    The student's gradient is the KD gradient at the learned T, whatever lambda."""
    zscore = logit_norm == 'zscore'
    loss = CTKDLoss(logit_norm=logit_norm, loss_weight=0.9)
    loss.temperature.grl_lambda = strength
    theta, h = 0.4, 1e-5
    with torch.no_grad():
        loss.temperature.global_t.fill_(theta)
    s, t = logits(scale=4.0, seed=5).requires_grad_(), logits(scale=4.0, seed=6)
    loss(s, t).backward()

    def at(x):
        return 0.9 * reference_loss(s.detach(), t, [1 + 20 * sigmoid(x)] * 6, zscore=zscore)

    d_theta = (at(theta + h) - at(theta - h)) / (2 * h)
    assert abs(d_theta) > 1e-3
    # float32 leaves each row's KL off by a few 1e-7 (tolerance()), and d (T^2 KL) / d T multiplies that by 2T,
    # while the T-derivatives of the compensation and of the two softmaxes cancel to about a hundredth of 2T KL at
    # this T (about 13, near-uniform softmaxes): the gradient's error is that of 2T KL, not a part of its value
    # (7e-6 of 3e-3 on a 2-core AVX2 CPU for lambda = 1 with z-scores). dT / dtheta = 20 sigmoid'(theta).
    d_temperature = 20 * sigmoid(theta) * (1 - sigmoid(theta))
    float32_error = strength * 0.9 * 2 * (1 + 20 * sigmoid(theta)) * 5e-7 * d_temperature
    assert loss.temperature.global_t.grad.item() == pytest.approx(-strength * d_theta, rel=1e-3,
                                                                   abs=float32_error + 1e-9)
    if not zscore:
        expected = 0.9 * reference_student_gradient(s.detach(), t, [1 + 20 * sigmoid(theta)] * 6)
        np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-4, atol=1e-8)


def test_an_optimizer_step_on_the_temperature_raises_the_loss():
    """Adversarial: the student's optimizer, stepping on the reversed gradient, moves T to increase L_CTKD."""
    loss = CTKDLoss()
    loss.temperature.grl_lambda = 1.0
    s, t = logits(scale=4.0, seed=7), logits(scale=4.0, seed=8)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0)
    before = loss(s, t)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert loss(s, t) > before + 1e-4


def test_instance_mlp_gets_the_reversed_gradient_and_the_student_none_through_it():
    torch.manual_seed(1)
    loss = CTKDLoss(mode='instance', num_classes=10, hidden_channels=8)
    loss.temperature.grl_lambda = 0.5
    s, t = logits(scale=3.0, seed=9).requires_grad_(), logits(scale=3.0, seed=10)
    loss(s, t).backward()
    # the same computation without reversal, in float64, on a copy of the MLP
    mlp = copy.deepcopy(loss.temperature.mlp).double()
    x = torch.cat([t.double().softmax(1), s.detach().double().softmax(1)], dim=1)
    T = 1 + 20 * torch.sigmoid(mlp(x))
    log_p, log_q = (t.double() / T).log_softmax(1), (s.detach().double() / T).log_softmax(1)
    (T[:, 0] ** 2 * (log_p.exp() * (log_p - log_q)).sum(1)).mean().backward()
    for ours, plain in zip(loss.temperature.mlp.parameters(), mlp.parameters()):
        torch.testing.assert_close(ours.grad.double(), -0.5 * plain.grad, rtol=1e-3, atol=1e-5)  # float32 vs 64
    expected = reference_student_gradient(s.detach(), t, T.detach()[:, 0].numpy())
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-4, atol=1e-8)


# -- the curriculum -------------------------------------------------------------------------------------------------
#: lambda at epochs 1-10 of the LS authors' CTKD run (sunshangquan/logit-standardization-KD, logs/CTKD/
#: ctkd,resnet56,resnet20,2,9.txt, its "decay_value", which multiplies the gradient: -lambda), then 1 from epoch 10 on
LOGGED = [0.02447174185242318, 0.09549150281252627, 0.20610737385376343, 0.3454915028125263, 0.5,
          0.6545084971874737, 0.7938926261462365, 0.9045084971874737, 0.9755282581475768, 1.0]


def paper_lambda(n, lambda_min=0.0, lambda_max=1.0, loops=10):
    """Eq. 11 of the paper: lambda_min + 1/2 (lambda_max - lambda_min) (1 + cos((1 + min(n, E) / E) pi))."""
    return lambda_min + 0.5 * (lambda_max - lambda_min) * (1 + math.cos((1 + min(n, loops) / loops) * math.pi))


@pytest.mark.parametrize('epoch', range(1, 11))
def test_curriculum_matches_the_paper_and_the_authors_logged_values(epoch):
    assert cosine_curriculum(epoch) == pytest.approx(paper_lambda(epoch), abs=1e-12)
    assert cosine_curriculum(epoch) == pytest.approx(LOGGED[epoch - 1], abs=1e-12)


def test_curriculum_bounds_and_other_ranges():
    assert cosine_curriculum(0) == pytest.approx(0.0, abs=1e-12)
    assert [cosine_curriculum(n) for n in (10, 11, 240)] == pytest.approx([1.0, 1.0, 1.0])
    assert cosine_curriculum(5, 0.2, 0.6, 10) == pytest.approx(0.4)
    assert cosine_curriculum(3, 0.0, 1.0, 5) == pytest.approx(paper_lambda(3, loops=5))  # ImageNet: 5 epochs
    assert cosine_curriculum(1, 0.0, 1.0, 1.25) == pytest.approx(paper_lambda(1, loops=1.25))


# -- the hook -------------------------------------------------------------------------------------------------------
def fake_runner(losses, epoch=0, iteration=0):
    model = SimpleNamespace(losses=nn.ModuleDict(losses))
    return SimpleNamespace(model=model, epoch=epoch, iter=iteration)


def test_hook_sets_lambda_from_the_epoch_so_a_resumed_run_is_right_at_once():
    runner = fake_runner({'ctkd': CTKDLoss(), 'kd': KDLoss()})
    hook = CTKDCurriculumHook()
    for epoch in (0, 4, 9, 30):  # runner.epoch counts from 0: the authors' epoch epoch + 1
        runner.epoch = epoch
        hook.before_train_iter(runner, 0)
        assert runner.model.losses['ctkd'].temperature.grl_lambda == pytest.approx(paper_lambda(epoch + 1))
    resumed = fake_runner({'ctkd': CTKDLoss()}, epoch=6)  # a fresh hook and loss, as after a resume
    CTKDCurriculumHook().before_train_iter(resumed, 0)
    assert resumed.model.losses['ctkd'].temperature.grl_lambda == pytest.approx(LOGGED[6])


def test_the_hook_logs_the_temperature_with_the_next_validation_s_scalars():
    """The temperature of the epoch that just ended goes into the next validation record (mmengine's LoggerHook
    writes the message hub's val/* scalars there), not into a record of its own, which analysis tools took for the
    validation keys (mmpretrain's analyze_logs then refused accuracy/top1)."""
    from mmengine.logging import MessageHub
    runner = fake_runner({'ctkd': CTKDLoss()}, epoch=2, iteration=300)
    runner.logger = SimpleNamespace(info=lambda text: None)
    runner.message_hub = MessageHub('ctkd_log_test')
    runner.model.losses['ctkd'].temperature.last_temperature = torch.tensor(3.5)
    CTKDCurriculumHook().after_train_epoch(runner)
    logged = {key: buffer.current() for key, buffer in runner.message_hub.log_scalars.items()}
    assert logged == {'val/ctkd/ctkd/lambda': 0.0, 'val/ctkd/ctkd/temperature': 3.5}


def test_hook_by_iteration_and_with_named_losses():
    runner = fake_runner({'a': CTKDLoss(), 'b': CTKDLoss(mode='instance', num_classes=10)}, iteration=49)
    CTKDCurriculumHook(lambda_max=0.5, loops=100, by_epoch=False, losses=['b']).before_train_iter(runner, 0)
    assert runner.model.losses['a'].temperature.grl_lambda == 0.0
    assert runner.model.losses['b'].temperature.grl_lambda == pytest.approx(0.25)


def test_hook_errors_name_the_problem():
    with pytest.raises(KeyError, match='no loss named'):
        CTKDCurriculumHook(losses=['nkd']).before_train_iter(fake_runner({'ctkd': CTKDLoss()}), 0)
    with pytest.raises(ValueError, match=r"\['kd'\] learn no temperature"):
        CTKDCurriculumHook(losses=['kd']).before_train_iter(fake_runner({'kd': KDLoss()}), 0)
    with pytest.raises(ValueError, match='add a CTKDLoss'):
        CTKDCurriculumHook().before_train_iter(fake_runner({'kd': KDLoss()}), 0)
    with pytest.raises(ValueError, match='loops must be a finite number > 0'):
        CTKDCurriculumHook(loops=0)
    with pytest.raises(ValueError, match='lambda_max must be a finite number'):
        CTKDCurriculumHook(lambda_max=float('nan'))


# -- the loss's contract --------------------------------------------------------------------------------------------
def test_the_learned_temperature_is_kdplugs_temperature():
    temperature = CTKDLoss().temperature
    assert isinstance(temperature, Temperature) and isinstance(temperature, nn.Module)
    assert isinstance(temperature, LearnableTemperature) and not temperature.per_sample
    assert CTKDLoss(mode='instance', num_classes=10).temperature.per_sample
    T = torch.tensor([[2.0], [3.0]])
    torch.testing.assert_close(temperature.compensation(T), torch.tensor([4.0, 9.0]))


@pytest.mark.parametrize('cfg,message', [
    (dict(t_start=0.0), 't_start must be a finite number > 0'),
    (dict(t_start=float('nan')), 't_start must be a finite number'),
    (dict(t_range=-1.0), 't_range must be a finite number >= 0'),
    (dict(t_range=float('inf')), 't_range must be a finite number'),
    (dict(loss_weight=float('nan')), 'loss_weight must be a finite number'),
    (dict(mode='batch'), 'mode'),
    (dict(mode='instance'), 'give num_classes'),
    (dict(num_classes=10), "for mode='instance' only"),
    (dict(mode='instance', num_classes=1), 'num_classes must be an integer >= 2'),
    (dict(mode='instance', num_classes=10.0), 'num_classes must be an integer'),
    (dict(mode='instance', num_classes=10, hidden_channels=0), 'hidden_channels must be an integer >= 1'),
    (dict(hidden_channels=64), "hidden_channels=64 sizes the instance-wise temperature's MLP"),  # was ignored
    (dict(t_start=True), 't_start must be a number, got True'),  # was 1.0
    (dict(logit_norm='std'), 'logit_norm'),
])
def test_every_hyperparameter_is_validated_at_build(cfg, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(dict(type='CTKDLoss', **cfg))


def test_instance_temperature_refuses_logits_of_another_class_count():
    with pytest.raises(ValueError, match='built for num_classes=10'):
        CTKDLoss(mode='instance', num_classes=10)(logits(c=12), logits(c=12))


@pytest.mark.parametrize('mode', ['global', 'instance'])
def test_empty_batch_half_precision_and_equal_logits(mode):
    loss = CTKDLoss(mode=mode, num_classes=10 if mode == 'instance' else None)
    s = torch.zeros(0, 10, requires_grad=True)
    value = loss(s, torch.zeros(0, 10))
    assert value.item() == 0.0 and value.requires_grad
    x = logits(scale=3.0, seed=11)
    assert loss(x, x.clone()).abs() < 1e-6
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(x.bfloat16().requires_grad_(), logits(seed=12).bfloat16())
    assert value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('logit_norm', [None, 'zscore', 'l2'])
def test_fuzz_instance_wise_keeps_finite_values_and_gradients(dtype, logit_norm, one_thread):
    """tests/test_nonfinite.py's fuzz (which builds every loss with its defaults: the global temperature) for the
    instance-wise temperature, one loss per class count, lambda 1: value, student and MLP gradients finite."""
    from test_nonfinite import FUZZ, fuzz_inputs
    losses = {}
    failures = []
    for seed, (n, c, scale, kind) in enumerate(FUZZ):
        loss = losses.setdefault(c, CTKDLoss(mode='instance', num_classes=c, logit_norm=logit_norm))
        loss.temperature.grl_lambda = 1.0
        loss.zero_grad()
        s, t, y = fuzz_inputs(n, c, scale, kind, dtype, seed)
        value = loss(s, t, y)
        value.backward()
        grads = [s.grad] + [p.grad for p in loss.parameters()]
        if not torch.isfinite(value) or not all(torch.isfinite(g.float()).all() for g in grads):
            failures.append(f'N={n} C={c} scale={scale} {kind}: value {value.item()}')
    assert not failures, f'{len(failures)} of {len(FUZZ)}: ' + '; '.join(failures[:5])


def test_zscore_ctkd_is_invariant_to_shift_and_positive_scale():
    loss = CTKDLoss(t_start=2.0, logit_norm='zscore')
    s, t = logits(seed=13), logits(seed=14)
    moved = loss(s * (torch.rand(6, 1) * 5 + 0.2) + torch.randn(6, 1) * 3, t * 4.0 - 7.0)
    torch.testing.assert_close(moved, loss(s, t), rtol=1e-4, atol=1e-6)


# -- in a distiller -------------------------------------------------------------------------------------------------
def build_distiller(tmp_path, loss_cfg):
    from runner_helpers import distiller_cfg, save_teacher
    return MODELS.build(distiller_cfg(save_teacher(tmp_path / 'teacher.pth'), losses=dict(ctkd=loss_cfg)))


def train_batch():
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    return dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(4)],
                data_samples=[DataSample().set_gt_label(i) for i in range(4)])


@pytest.mark.parametrize('mode', ['global', 'instance'])
def test_the_distillers_optimizer_trains_the_temperature_and_its_state_holds_it(tmp_path, mode, one_thread):
    from mmengine.optim import OptimWrapper
    cfg = dict(type='CTKDLoss', mode=mode, num_classes=10 if mode == 'instance' else None, loss_weight=0.9)
    distiller = build_distiller(tmp_path, cfg)
    temperature = distiller.losses['ctkd'].temperature
    own = list(temperature.parameters())
    assert own and {id(p) for p in own} <= {id(p) for p in distiller.parameters()}
    keys = {f'losses.ctkd.temperature.{name}' for name, _ in temperature.named_parameters()}
    assert keys <= set(distiller.state_dict())
    assert ('losses.ctkd.temperature.global_t' in keys) == (mode == 'global')

    optim_wrapper = OptimWrapper(torch.optim.SGD(distiller.parameters(), lr=0.5))  # no weight decay
    before = {name: p.detach().clone() for name, p in temperature.named_parameters()}
    hook, runner = CTKDCurriculumHook(loops=1), SimpleNamespace(model=distiller, epoch=0, iter=0)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)  # lambda 1
    assert temperature.grl_lambda == 1.0
    log_vars = distiller.train_step(train_batch(), optim_wrapper)
    assert 'distill.loss_ctkd' in log_vars and torch.isfinite(log_vars['loss'])
    moved = [name for name, p in temperature.named_parameters() if not torch.equal(before[name], p.detach())]
    assert moved, 'one optimizer step through train_step left the temperature where it was'

    fresh = build_distiller(tmp_path, cfg)
    fresh.load_state_dict(distiller.state_dict())
    for (name, p), q in zip(temperature.named_parameters(), fresh.losses['ctkd'].temperature.parameters()):
        assert torch.equal(p, q), name


def test_lambda_zero_leaves_the_temperature_untrained(tmp_path, one_thread):
    from mmengine.optim import OptimWrapper
    distiller = build_distiller(tmp_path, dict(type='CTKDLoss'))
    CTKDCurriculumHook().before_train(SimpleNamespace(model=distiller, epoch=0, iter=0))  # lambda stays 0
    distiller.train_step(train_batch(), OptimWrapper(torch.optim.SGD(distiller.parameters(), lr=0.5)))
    assert distiller.losses['ctkd'].temperature.global_t.item() == 1.0


def test_a_learned_temperature_without_its_curriculum_hook_is_refused(tmp_path, one_thread):
    """Without kdplug.CTKDCurriculumHook lambda stayed 0: the run trained plain KD at T = 15.62, which the weight
    decay alone moved (to about 11 over the 240-epoch recipe), without a word."""
    from mmengine.optim import OptimWrapper
    distiller = build_distiller(tmp_path, dict(type='CTKDLoss'))
    with pytest.raises(RuntimeError, match=r"losses.ctkd has a LearnableTemperature that kdplug.CTKDCurriculumHook "
                                           r"drives.* add custom_hooks=\[dict\(type='kdplug.CTKDCurriculumHook'\)\]"
                                           r'. Without it its adversarial strength lambda would stay 0'):
        distiller.train_step(train_batch(), OptimWrapper(torch.optim.SGD(distiller.parameters(), lr=0.5)))


def test_a_run_with_the_hook_saves_the_trained_temperature(cifar10_root, tmp_path, teacher_checkpoint, one_thread):
    from runner_helpers import make_runner, run_config
    cfg = run_config(cifar10_root, tmp_path, teacher_checkpoint, max_iters=2)
    cfg.model.losses = dict(ctkd=dict(type='CTKDLoss', loss_weight=0.9))
    cfg.custom_hooks = [dict(type='kdplug.CTKDCurriculumHook', loops=1, by_epoch=False)]  # lambda 1 from step 1
    runner = make_runner(cfg)
    runner.train()
    assert runner.model.losses['ctkd'].temperature.grl_lambda == 1.0
    state = torch.load(tmp_path / 'iter_2.pth', map_location='cpu', weights_only=True)['state_dict']
    assert state['losses.ctkd.temperature.global_t'].item() != 1.0


def test_the_curriculum_hook_takes_one_loss_name_as_a_string(tmp_path, one_thread):
    """losses='ctkd' was taken as the names 'c', 't', 'k', 'd' at the first iteration."""
    distiller = build_distiller(tmp_path, dict(type='CTKDLoss'))
    hook = CTKDCurriculumHook(losses='ctkd')
    assert hook.losses == ['ctkd'] and list(hook.temperatures(distiller)) == ['ctkd']


@pytest.mark.parametrize('temperatures', [4, '1,2', []])
def test_multi_temperature_kd_needs_a_list_of_temperatures(temperatures):
    """4 gave "'int' object is not iterable"; '1,2' iterated the string's characters."""
    with pytest.raises(ValueError, match='MultiTempKDLoss: temperatures must be a list of numbers, e.g. \\[1, 2, 4\\]'):
        MODELS.build(dict(type='MultiTempKDLoss', temperatures=temperatures))
