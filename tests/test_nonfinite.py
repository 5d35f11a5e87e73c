"""No NaN reaches the student silently: broken teachers stop the run, bad hyper-parameters stop the build, and
every registered logit loss keeps finite values and gradients over a fuzzed grid of logits."""
import inspect
import itertools

import pytest
import torch

from kdplug.losses.functional import SPREAD_FLOOR, l2_normalize, zscore
from kdplug.plugins import plugin_infos
from kdplug.registry import MODELS
from runner_helpers import make_runner, run_config, save_teacher


# -- a broken teacher -----------------------------------------------------------------------------------------------
def test_a_teacher_checkpoint_with_nan_weights_is_refused_at_load(tmp_path):
    path = save_teacher(tmp_path / 'teacher.pth')
    checkpoint = torch.load(path, weights_only=True)
    checkpoint['state_dict']['head.fc.weight'][0, 0] = float('nan')
    torch.save(checkpoint, path)
    from kdplug.teachers.checkpoint import load_teacher_weights
    from runner_helpers import build_classifier, classifier_cfg
    with pytest.raises(RuntimeError, match=r'NaN or inf values in 1 of .*head\.fc\.weight.*earlier checkpoint'):
        load_teacher_weights(build_classifier(classifier_cfg('ResNet20')), path)


def test_nan_teacher_logits_stop_the_run_and_never_reach_the_student(cifar10_root, teacher_checkpoint, tmp_path,
                                                                      one_thread):
    """The teacher's logits turn NaN in the middle of a run (e.g. a float16 overflow): the distillation stops with
    an error naming the teacher, and the student's weights hold no NaN."""
    runner = make_runner(run_config(cifar10_root, tmp_path / 'work', teacher_checkpoint, max_iters=4))
    distiller = runner.model
    calls = []

    def broken_head(module, args, output):
        calls.append(1)
        if len(calls) >= 2:  # the first step is fine, then one row goes bad
            output = output.clone()
            output[0, 3] = float('nan')
        return output

    distiller.teacher_model.head.fc.register_forward_hook(broken_head)
    with pytest.raises(FloatingPointError, match=r'the teacher \(.*teacher.pth\) produced non-finite logits'):
        runner.train()
    assert all(torch.isfinite(p).all() for p in distiller.student.parameters())


def test_bad_teacher_rows_are_left_out_of_the_losses_with_zero_gradient(teacher_checkpoint):
    """Between two checks on an accelerator, a NaN teacher row contributes nothing: value and gradient stay
    those of the good rows."""
    from runner_helpers import KD_CONFIG
    from mmengine.config import Config
    cfg = Config.fromfile(str(KD_CONFIG)).model
    cfg.teacher.checkpoint = teacher_checkpoint
    distiller = MODELS.build(cfg)
    distiller.TEACHER_CHECK_INTERVAL = 10 ** 9
    distiller.check_teacher_rows = lambda: None  # as between two checks on a GPU
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10)
    t_bad = t.clone()
    t_bad[1, 2] = float('inf')
    losses = distiller.distill_losses(s, t_bad, torch.arange(4))
    value = sum(losses.values())
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all() and s.grad[1].abs().max() == 0
    keep = torch.tensor([0, 2, 3])
    expected = sum(distiller.distill_losses(s[keep].detach(), t[keep], torch.arange(4)[keep]).values())
    torch.testing.assert_close(value.detach(), expected)


class NaNAfterFirstStep(torch.nn.Module):
    """A plugin's loss with a bug: finite at the first call, then sqrt of negative logits."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        self.calls += 1
        value = (student_logits.float() - teacher_logits.float()).square().mean()
        return value if self.calls == 1 else value + student_logits.float().sqrt().mean()


def test_a_loss_that_turns_nan_stops_the_run_before_the_optimizer_step(cifar10_root, teacher_checkpoint, tmp_path,
                                                                       one_thread):
    """mmengine trains on whatever the losses sum to: a NaN loss value made every weight NaN and the run went on
    to its end (exit 0, a NaN 'best' checkpoint). It stops at that step, naming the loss, the student finite."""
    cfg = run_config(cifar10_root, tmp_path / 'work', teacher_checkpoint, max_iters=4)
    cfg.model.losses = dict(buggy=dict(type='KDLoss'))
    runner = make_runner(cfg)
    distiller = runner.model
    distiller.losses['buggy'] = NaNAfterFirstStep()  # (the Runner dumps its config: a class there is no text)
    with pytest.raises(FloatingPointError, match=r'distill\.loss_buggy \(NaNAfterFirstStep\) not finite \(NaN or inf\) '
                       r'at distillation step 2: the loss computes a NaN or inf itself.*student\'s logits were finite'
                       r'.*before the optimizer takes this step'):
        runner.train()
    assert all(torch.isfinite(p).all() for p in distiller.student.parameters())


def test_a_diverged_student_is_named_as_such(cifar10_root, teacher_checkpoint, tmp_path, one_thread):
    """NaN student logits make its own loss and the distillation losses NaN: the error says the student diverged
    and how to tame it, not that a loss is broken."""
    runner = make_runner(run_config(cifar10_root, tmp_path / 'work', teacher_checkpoint, max_iters=3))
    distiller = runner.model

    def diverged(module, args, output):
        return output * float('inf')

    distiller.student.head.fc.register_forward_hook(diverged)
    with pytest.raises(FloatingPointError, match=r'student\.loss, distill\.loss_kd \(KDLoss\) not finite.*at '
                       r'distillation step 1: the student\'s own logits are not finite: the student diverged: lower '
                       r'the learning rate, clip its gradients'):
        runner.train()


def test_nonfinite_losses_on_an_accelerator_are_read_every_interval_and_before_validation(teacher_checkpoint):
    """Reading a count waits for the device: between two reads the counts add up on it, and the error says how
    many steps it covers; prediction (validation) reads it first."""
    from mmengine.config import Config
    from kdplug.tasks.base import StudentOutput
    from runner_helpers import KD_CONFIG
    cfg = Config.fromfile(str(KD_CONFIG)).model
    cfg.teacher.checkpoint = teacher_checkpoint
    distiller = MODELS.build(cfg)
    student = StudentOutput(rows=[], losses={})
    read = []
    distiller.check_losses = lambda student=None: read.append(student)  # as on a GPU between two reads
    for step in range(1, 4):
        distiller._distill_steps = step
        distiller.count_nonfinite_losses({'student.loss': torch.tensor(float('nan') if step == 2 else 1.0),
                                          'distill.loss_kd': torch.tensor(1.0), 'distill.num_rois': 3}, student)
    assert {key: int(count) for key, count in distiller._nonfinite_losses.items()} == \
        {'student.loss': 1, 'distill.loss_kd': 0}
    del distiller.check_losses
    with pytest.raises(FloatingPointError, match=r'student\.loss not finite \(NaN or inf\) in the 3 distillation steps '
                       r'so far.*the student diverged'):
        distiller.forward(torch.zeros(1, 3, 32, 32), None, mode='predict')


class Swapped(torch.nn.Module):
    """The teacher's logits taken first, and detached as a loss does with its teacher's: it detaches the student.
    Its arguments' names do not say so (one named teacher_logits first is refused at build)."""

    def forward(self, reference, logits, target=None, weight=None):
        return (reference.detach().float().softmax(-1) - logits.float().softmax(-1)).square().mean()


class DetachedThroughItsOwnParameter(torch.nn.Module):
    """A value that carries a gradient (to its own temperature), none to the student."""

    def __init__(self):
        super().__init__()
        self.temperature = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return (student_logits.detach() / self.temperature).log_softmax(-1).mean().neg()


@pytest.mark.parametrize('broken', [Swapped, DetachedThroughItsOwnParameter])
def test_a_loss_that_sends_no_gradient_to_the_student_is_named_at_its_first_step(teacher_checkpoint, broken):
    """Such a loss was logged every step, trained nothing, and exited 0."""
    from mmengine.config import Config
    from runner_helpers import KD_CONFIG
    cfg = Config.fromfile(str(KD_CONFIG)).model
    cfg.teacher.checkpoint = teacher_checkpoint
    cfg.losses = dict(kd=dict(type='KDLoss'), odd=dict(type=broken))
    distiller = MODELS.build(cfg)
    s, t = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10)
    with pytest.raises(TypeError, match=rf'losses\.odd \({broken.__name__}\) returned a value that does not depend on '
                       r'the student\'s logits.*the student first'):
        distiller.distill_losses(s, t, torch.arange(4))
    with torch.no_grad():  # evaluation: nothing to check
        distiller.distill_losses(s, t, torch.arange(4))


def test_the_gradient_path_of_every_builtin_loss_passes_the_check_and_each_reads_its_row_weights(teacher_checkpoint):
    from mmengine.config import Config
    from runner_helpers import KD_CONFIG
    cfg = Config.fromfile(str(KD_CONFIG)).model
    cfg.teacher.checkpoint = teacher_checkpoint
    cfg.losses = dict(kd=dict(type='KDLoss'), dkd=dict(type='DKDLoss'), nkd=dict(type='NKDLoss'),
                      normkd=dict(type='NormKDLoss'), mtkd=dict(type='MultiTempKDLoss'), ctkd=dict(type='CTKDLoss'))
    distiller = MODELS.build(cfg)
    s = torch.randn(4, 10, requires_grad=True)
    values = distiller.distill_losses(s * 2, torch.randn(4, 10), torch.arange(4))  # s * 2: a node, as in a network
    assert distiller._gradient_checked == set(cfg.losses) and all(v.requires_grad for v in values.values())
    # and each reads its row weights: one step told (the check is done), none was refused
    assert distiller._weights_checked == dict.fromkeys(cfg.losses, distiller.WEIGHT_CHECK_STEPS)


class IgnoresItsWeight(torch.nn.Module):
    """Takes ``weight`` and drops it: a zeroed teacher row would be learnt as a uniform teacher."""

    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return (student_logits.softmax(-1) - teacher_logits.softmax(-1)).square().sum(-1).mean()


class ReturnsDtype(torch.nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return (student_logits.to(self.dtype) - teacher_logits.to(self.dtype)).square().mean()


def kd_distiller(teacher_checkpoint, **losses):
    from mmengine.config import Config
    from runner_helpers import KD_CONFIG
    cfg = Config.fromfile(str(KD_CONFIG)).model
    cfg.teacher.checkpoint = teacher_checkpoint
    cfg.losses = losses
    return MODELS.build(cfg)


def test_a_loss_that_takes_row_weights_and_ignores_them_is_refused_at_its_first_step(teacher_checkpoint):
    distiller = kd_distiller(teacher_checkpoint, kd=dict(type='KDLoss'), odd=dict(type=IgnoresItsWeight))
    s = torch.randn(8, 10, requires_grad=True)
    with pytest.raises(TypeError, match=r'losses\.odd \(IgnoresItsWeight\) takes a weight argument but ignores it: '
                       r'weight 0 on the rows of half the images left its value unchanged.*sum\(w \* l\) / sum\(w\)'):
        distiller.distill_losses(s, torch.randn(8, 10), torch.arange(8))


class MeanOfWeighted(torch.nn.Module):
    """(w * l).mean(): with 20 foreground RoIs of 1024 (background='exclude'), 50 times too small."""

    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        per_row = (student_logits.softmax(-1) - teacher_logits.softmax(-1)).square().sum(-1)
        return (per_row * (1 if weight is None else weight)).mean()


def test_a_loss_that_weighs_rows_otherwise_than_the_weighted_mean_is_refused(teacher_checkpoint):
    distiller = kd_distiller(teacher_checkpoint, odd=dict(type=MeanOfWeighted))
    with pytest.raises(TypeError, match=r'losses\.odd \(MeanOfWeighted\) weighs its rows otherwise than '
                                        r'sum\(w \* l\) / sum\(w\)'):
        distiller.distill_losses(torch.randn(8, 10, requires_grad=True), torch.randn(8, 10), torch.arange(8))


class TeacherFirst(torch.nn.Module):
    def forward(self, teacher_logits, student_logits, target=None, weight=None):
        return torch.nn.functional.kl_div(student_logits.log_softmax(-1), teacher_logits.softmax(-1),
                                          reduction='batchmean')


def test_a_loss_whose_first_argument_is_the_teacher_s_is_refused_at_build(teacher_checkpoint):
    """Without a detach the swapped loss trained, a reversed KL, exit code 0."""
    with pytest.raises(TypeError, match=r"losses\.odd \(TeacherFirst\) names its first argument 'teacher_logits', "
                                        r"but the distiller passes the student's logits first"):
        kd_distiller(teacher_checkpoint, odd=dict(type=TeacherFirst))


def test_a_step_whose_rows_are_all_alike_tells_nothing_and_the_next_step_checks_again(teacher_checkpoint):
    """An EMA teacher's first step equals the student: every row's loss is 0, whether or not it reads weights."""
    distiller = kd_distiller(teacher_checkpoint, odd=dict(type=IgnoresItsWeight))
    s = torch.randn(8, 10, requires_grad=True)
    distiller.distill_losses(s, s.detach().clone(), torch.arange(8))
    assert distiller._weights_checked == {'odd': 1}
    with pytest.raises(TypeError, match='ignores it'):
        distiller.distill_losses(s, torch.randn(8, 10), torch.arange(8))


@pytest.mark.parametrize('dtype', [torch.float16, torch.float64])
def test_a_loss_value_that_is_not_float32_is_refused(teacher_checkpoint, dtype):
    distiller = kd_distiller(teacher_checkpoint, odd=dict(type=ReturnsDtype, dtype=dtype))
    with pytest.raises(TypeError, match=rf'losses\.odd \(ReturnsDtype\) returned a {dtype} value.*\.float\(\)'):
        distiller.distill_losses(torch.randn(4, 10, requires_grad=True), torch.randn(4, 10), torch.arange(4))


class UnweightedSquaredError(torch.nn.Module):
    """A plugin's loss without row weights (allowed where the task weighs no rows)."""

    def forward(self, student_logits, teacher_logits, target=None):
        return (student_logits.softmax(-1) - teacher_logits.softmax(-1)).square().sum(-1).mean()


def test_a_loss_without_row_weights_is_left_out_of_a_batch_with_a_bad_teacher_row(teacher_checkpoint):
    """It cannot leave the zeroed row out, which it would learn from as a uniform teacher: between two checks on an
    accelerator its whole batch contributes nothing (no device read), and the check counts steps, not calls."""
    from runner_helpers import KD_CONFIG
    from mmengine.config import Config
    cfg = Config.fromfile(str(KD_CONFIG)).model
    cfg.teacher.checkpoint = teacher_checkpoint
    cfg.losses = dict(se=dict(type=UnweightedSquaredError), kd=dict(type='KDLoss'))
    distiller = MODELS.build(cfg)
    check = distiller.check_teacher_rows
    distiller.check_teacher_rows = lambda: None  # as between two checks on a GPU
    s, t = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10)
    good = distiller.distill_losses(s, t, torch.arange(4))
    assert good['distill.loss_se'] > 0
    t[1, 2] = float('nan')
    bad = distiller.distill_losses(s, t, torch.arange(4))
    assert bad['distill.loss_se'] == 0 and bad['distill.loss_kd'] > 0
    sum(bad.values()).backward()
    assert s.grad[1].abs().max() == 0
    distiller._distill_steps = 2  # two steps of three groups each (a cascade) so far
    with pytest.raises(FloatingPointError, match='for 1 rows in the 2 distillation steps so far'):
        check()


# -- hyper-parameters and labels ------------------------------------------------------------------------------------
@pytest.mark.parametrize('cfg,name', [
    (dict(type='KDLoss', temperature=float('nan')), 'temperature'),
    (dict(type='KDLoss', temperature=float('inf')), 'temperature'),
    (dict(type='KDLoss', temperature=0.0), 'temperature'),
    (dict(type='NormKDLoss', t_norm=float('nan')), 't_norm'),
    (dict(type='NormKDLoss', t_norm=-1.0), 't_norm'),
    (dict(type='MultiTempKDLoss', temperatures=[1.0, float('nan')]), 'temperature'),
    (dict(type='DKDLoss', alpha=float('nan')), 'alpha'),
    (dict(type='DKDLoss', beta=-8.0), 'beta'),
    (dict(type='NKDLoss', gamma=float('inf')), 'gamma'),
    (dict(type='KDLoss', loss_weight=float('nan')), 'loss_weight'),
    (dict(type='KDLoss', loss_weight=-1.0), 'loss_weight'),
    (dict(type='KDLoss', loss_weight='0.9'), None),  # a numeric string is a number
    (dict(type='USKDLoss', mu=float('nan')), 'mu'),
])
def test_every_hyperparameter_is_validated_at_build(cfg, name):
    if name is None:
        assert MODELS.build(cfg).loss_weight == 0.9
        return
    with pytest.raises(ValueError, match=f'{name} must be a finite number'):
        MODELS.build(cfg)


def test_float_labels_that_are_not_class_indices_are_refused():
    s, t = torch.randn(3, 10), torch.randn(3, 10)
    with pytest.raises(ValueError, match=r'class indices.*1\.7'):
        MODELS.build(dict(type='DKDLoss'))(s, t, torch.tensor([1.7, 2.0, 3.0]))
    torch.testing.assert_close(MODELS.build(dict(type='DKDLoss'))(s, t, torch.tensor([1.0, 2.0, 3.0])),
                               MODELS.build(dict(type='DKDLoss'))(s, t, torch.tensor([1, 2, 3])))


def test_a_nan_teacher_makes_the_loss_value_nan_not_a_silent_zero():
    """Called directly (outside a distiller), a loss shows a broken teacher in its value."""
    s, t = torch.randn(2, 5, requires_grad=True), torch.randn(2, 5)
    t[0, 0] = float('nan')
    assert torch.isnan(MODELS.build(dict(type='KDLoss'))(s, t))


# -- constant rows: bounded gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize('transform', [zscore, l2_normalize])
@pytest.mark.parametrize('row', [torch.zeros(10), torch.full((10,), 7.0), 7.0 + 1e-5 * torch.randn(10)])
def test_the_pre_transforms_have_bounded_gradients_on_constant_rows(transform, row):
    """Written from the documented rule, not the code: a row's spread is floored at SPREAD_FLOOR, so the Jacobian
    of the transform is at most ~2 / SPREAD_FLOOR per entry (was 1e7 for z-score and 1e12 for L2 at zero)."""
    x = row.unsqueeze(0).clone().requires_grad_()
    out = transform(x)
    jacobian = torch.stack([torch.autograd.grad(out[0, i], x, retain_graph=True)[0][0] for i in range(10)])
    assert torch.isfinite(jacobian).all() and jacobian.abs().max() <= 2.0 / SPREAD_FLOOR
    assert out.abs().max() <= 1.0  # near-constant in, near-constant out (a near-uniform softmax)


# -- the fuzz -------------------------------------------------------------------------------------------------------
def logit_loss_variants():
    """Every registered teacher-based logit loss with its defaults, and with each pre-transform / t_norm it takes."""
    names = sorted(n for info in plugin_infos() for n in info.contributions.get('kdplug_losses', []))
    variants = []
    for name in names:
        cls = MODELS.get(name)
        if not getattr(cls, 'teacher_based', True):
            continue
        params = inspect.signature(cls).parameters
        variants.append(dict(type=name))
        if 'logit_norm' in params:
            variants += [dict(type=name, logit_norm='zscore'), dict(type=name, logit_norm='l2')]
        if 't_norm' in params and name != 'NormKDLoss':
            variants.append(dict(type=name, t_norm=2.0) if 'temperature' not in params or name == 'MultiTempKDLoss'
                            else dict(type=name, temperature=None, t_norm=2.0))
    return variants


def fuzz_inputs(n, c, scale, kind, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale
    if kind == 'constant-student':
        s[0] = scale
    elif kind == 'constant-teacher':
        t[0] = 0.0
    elif kind == 'near-constant-student':
        s[0] = scale + scale * 1e-4 * torch.randn(c, generator=g)
    elif kind == 'huge-entry':  # one entry far above the rest, within float16's range
        s[0, 0], t[-1, -1] = 3e4, -3e4
    return s.to(dtype).requires_grad_(), t.to(dtype), torch.randint(0, c, (n,), generator=g)


FUZZ = list(itertools.product([1, 2, 64], [2, 3, 1000], [1e-3, 1.0, 1e3],
                              ['random', 'constant-student', 'constant-teacher', 'near-constant-student',
                               'huge-entry']))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('cfg', logit_loss_variants(), ids=lambda cfg: '-'.join(map(str, cfg.values())))
def test_fuzz_every_logit_loss_keeps_finite_values_and_gradients(cfg, dtype, one_thread):
    """Every loss x pre-transform, scales 1e-3..1e3, constant and near-constant rows, a huge entry, N in {1, 2, 64},
    C in {2, 3, 1000}: the value (float32) and the gradient (in the input's dtype) are finite. In float16 the
    gradient must fit the dtype; the one exemption is NormKD's per-sample temperature, whose T_t^2 weight makes
    the float32 gradient itself exceed float16's range at large logit scales (there AMP's GradScaler skips the
    step, as for any overflow); z-score and L2 have none."""
    loss = MODELS.build(cfg)
    normkd_weighted = cfg.get('t_norm') is not None or cfg['type'] == 'NormKDLoss'
    failures = []
    for seed, (n, c, scale, kind) in enumerate(FUZZ):
        s, t, y = fuzz_inputs(n, c, scale, kind, dtype, seed)
        value = loss(s, t, y)
        value.backward()
        if not torch.isfinite(value):
            failures.append(f'value {value.item()} at N={n} C={c} scale={scale} {kind}')
        elif not torch.isfinite(s.grad).all():
            reference = s.detach().float().requires_grad_()
            loss(reference, t.float(), y).backward()
            in_range = reference.grad.abs().max() < torch.finfo(dtype).max / 2
            if in_range or dtype != torch.float16 or not normkd_weighted:
                failures.append(f'gradient not finite at N={n} C={c} scale={scale} {kind} (float32 max '
                                f'{reference.grad.abs().max().item():.3g})')
    assert not failures, f'{len(failures)} of {len(FUZZ)}: ' + '; '.join(failures[:5])
