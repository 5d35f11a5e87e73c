"""The conformance checks of kdplug's plugin contracts, for a plugin's own tests as for kdplug's.

A logit loss builds from its defaults, so :func:`check_logit_loss` needs its config alone
(``check_logit_loss(dict(type='MyLoss'))``); kdplug's test suite runs every loss it finds registered, a plugin's
too, through the same checks. A task, a teacher source or a student-side module needs an example (a model, a
batch, a store) that only its author can give: kdplug's suite holds its own to the contract with the checks below,
and a plugin's suite calls the same checks with its examples::

    from kdplug.testing import check_task

    def test_my_task_keeps_kdplug_s_contract(tmp_path):
        check_task(dict(type='MyTask'), student_cfg, inputs, data_samples, position='layer2', work_dir=tmp_path)

Each check raises AssertionError (or the error kdplug itself raises) naming the part of the contract that fails.
kdplug's registries load when a check is called; pytest is not needed.
"""
import copy
import re
from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

import torch
from torch import nn


def _build(task_cfg: Mapping, student_cfg: Mapping) -> tuple:
    from kdplug.registry import TASKS
    task = TASKS.build(copy.deepcopy(dict(task_cfg)))
    return task, task.build_model(task.model_config(copy.deepcopy(dict(student_cfg))), 'student')


def check_task_rows(task_cfg: Mapping, student_cfg: Mapping, inputs: Any, data_samples: List) -> None:
    """A teacher with the student's weights, both in eval mode, gives the student's logits row for row: the rows
    are the same rows (images, RoIs, pixels...), in the same order; the student's own losses come with them."""
    task, student = _build(task_cfg, student_cfg)
    student.eval()  # no BatchNorm batch statistics: the same weights must give the same logits
    teacher = copy.deepcopy(student)
    out = task.student_forward(student, inputs, data_samples)
    assert out.rows and all(rows.logits.requires_grad for rows in out.rows), \
        f'{type(task).__name__}.student_forward gave no rows of logits that train the student'
    own = [v for key, value in out.losses.items() if 'loss' in key
           for v in (value if isinstance(value, list) else [value])]  # mmdet's RPN losses: a list per level
    assert own and any(v.requires_grad for v in own), \
        f'{type(task).__name__}.student_forward gave none of the student\'s own losses'
    with torch.no_grad():
        teacher_rows = task.teacher_logits(teacher, inputs, data_samples, out)
    assert len(teacher_rows) == len(out.rows), \
        f'{type(task).__name__}.teacher_logits gave {len(teacher_rows)} groups for {len(out.rows)} groups of rows'
    for group, (rows, logits) in enumerate(zip(out.rows, teacher_rows)):
        assert logits.shape == rows.logits.shape and rows.target.shape[0] == rows.logits.shape[0], \
            f'group {group}: teacher logits {tuple(logits.shape)}, student {tuple(rows.logits.shape)}, targets ' \
            f'{tuple(rows.target.shape)}'
        torch.testing.assert_close(logits, rows.logits.detach(), rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f'group {group}: the teacher scored other rows: {m}')


def check_task_features(task_cfg: Mapping, student_cfg: Mapping, inputs: Any, data_samples: List,
                        position: str) -> None:
    """Features are recorded at a named position and at ``'out'`` (outside a step and inside the student's
    forward, with their gradient), an unknown position is refused, and the stages the task names (the weak head's
    choices) are positions whose channels are those of the features recorded there."""
    task, student = _build(task_cfg, student_cfg)
    feats = task.features(student, inputs, [position, 'out'])
    assert feats[position].dim() == 4 and feats['out'].dim() == 4, {k: tuple(v.shape) for k, v in feats.items()}
    out = task.student_forward(student, inputs, data_samples, [position])
    assert out.features[position].requires_grad, f'the feature at {position!r} does not reach the student'
    try:
        task.check_positions(student, ['no_such_position_9'], 'student')
    except ValueError:
        pass
    else:
        raise AssertionError(f'{type(task).__name__}.check_positions accepted an unknown position')
    stages = task.stages(student)
    assert len(stages) >= 2 and position in stages, f'stages {stages} should hold {position!r}'
    task.check_positions(student, stages, 'student')
    feats = task.features(student, inputs, stages)
    for stage in stages:
        assert task.channels_at(student, stage) == feats[stage].shape[1], \
            f'{stage}: channels_at says {task.channels_at(student, stage)}, its feature has {feats[stage].shape[1]}'


def check_task_in_a_distiller_step(task_cfg: Mapping, student_cfg: Mapping, inputs: Any, data_samples: List,
                                   work_dir: Union[str, Path]) -> None:
    """A distiller of the task (KD and NKD from a checkpoint teacher, the student's own weights written to
    ``work_dir``) gives finite distillation losses whose gradient reaches the student, and never saves or trains
    the teacher."""
    from kdplug.registry import MODELS
    _, teacher = _build(task_cfg, student_cfg)
    checkpoint = Path(work_dir) / 'conformance_teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, checkpoint)
    distiller = MODELS.build(dict(
        type='Distiller', task=copy.deepcopy(dict(task_cfg)), student=copy.deepcopy(dict(student_cfg)),
        teacher=dict(type='CheckpointTeacher', model=copy.deepcopy(dict(student_cfg)), checkpoint=str(checkpoint)),
        losses=dict(kd=dict(type='KDLoss', temperature=2.0), nkd=dict(type='NKDLoss')))).train()
    losses = distiller.loss(inputs, data_samples)
    distill = {key: value for key, value in losses.items() if key.startswith('distill.') and 'loss' in key}
    assert distill and all(torch.isfinite(value) for value in distill.values()), distill
    assert any(key.startswith('student.') for key in losses), sorted(losses)
    total, _ = distiller.parse_losses(losses)  # as mmengine's train_step sums them
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.student.parameters()), \
        'no gradient reached the student'
    assert not any(key.startswith('teacher') for key in distiller.state_dict()), 'the teacher is in the checkpoint'
    assert all(not p.requires_grad for p in distiller.teacher_model.parameters()), 'the teacher trains'


def check_task(task_cfg: Mapping, student_cfg: Mapping, inputs: Any, data_samples: List, position: str,
               work_dir: Union[str, Path]) -> None:
    """The whole task contract: :func:`check_task_rows`, :func:`check_task_features` and
    :func:`check_task_in_a_distiller_step` on one example (a student config and a batch of ``inputs`` and
    ``data_samples`` as the task's data preprocessor gives them)."""
    check_task_rows(task_cfg, student_cfg, inputs, data_samples)
    check_task_features(task_cfg, student_cfg, inputs, data_samples, position)
    check_task_in_a_distiller_step(task_cfg, student_cfg, inputs, data_samples, work_dir)


def check_teacher_source(source_cfg: Mapping, task_cfg: Mapping, student_cfg: Mapping, inputs: Any,
                         data_samples: List, loss: Optional[Mapping] = None) -> None:
    """A teacher source gives one group of finite logits per group of the student's rows, of their shape, with a
    gradient only where it trains with the student (``external = False``, USKD's weak head), never into a teacher
    network, which stays in eval mode; and a distiller step with it (``loss``, default KD) is finite."""
    from kdplug.registry import MODELS
    from kdplug.teachers.base import TeacherSource
    loss = dict(loss or dict(type='KDLoss'))
    name = 'distill_check'
    distiller = MODELS.build(dict(type='Distiller', task=copy.deepcopy(dict(task_cfg)),
                                  student=copy.deepcopy(dict(student_cfg)), teacher=copy.deepcopy(dict(source_cfg)),
                                  losses={name: loss}))
    source = distiller.teacher
    assert isinstance(source, TeacherSource) and isinstance(source.external, bool), type(source)
    source.hook_attached = True  # a source's own hook (the EMA teacher's), as the Runner would attach it
    distiller.train()
    if distiller.teacher_model is not None:
        assert not distiller.teacher_model.training, 'train() reached the teacher network'
    source.before_step(distiller.student)
    out = distiller.task.student_forward(distiller.student, inputs, data_samples, source.student_positions)
    logits, feats = source.teach(distiller.task, inputs, data_samples, out)
    assert len(logits) == len(out.rows) and feats == {}, (len(logits), len(out.rows), sorted(feats))
    for rows, group in zip(out.rows, logits):
        assert group.shape == rows.logits.shape and torch.isfinite(group).all(), tuple(group.shape)
        assert group.requires_grad == (not source.external), \
            f'{type(source).__name__}: gradient {group.requires_grad}, external {source.external}'
    losses = distiller.loss(inputs, data_samples)
    assert torch.isfinite(losses[f'distill.loss_{name}']), losses


def check_student_module(layer: nn.Module, feature: torch.Tensor, loss: Optional[nn.Module] = None,
                         teacher_feature: Optional[torch.Tensor] = None, target: Optional[torch.Tensor] = None
                         ) -> None:
    """A student-side layer keeps the shape of the feature it is inserted on and lets the gradient through to the
    backbone below; its loss (a ``student_module`` attribute, ``loss(layer, teacher_feature, target)``) gives a
    finite positive scalar, or ``{'loss': scalar, diagnostics...}`` with detached diagnostics, whose gradient
    reaches the layer."""
    layer.train()
    feature = feature.detach().clone().requires_grad_()
    out = layer(feature)
    assert out.shape == feature.shape and torch.isfinite(out).all(), f'{tuple(feature.shape)} -> {tuple(out.shape)}'
    out.sum().backward()
    assert feature.grad is not None and torch.isfinite(feature.grad).all(), 'no gradient below the layer'
    if loss is None:
        return
    assert isinstance(getattr(loss, 'student_module', None), str), 'a student-module loss names its student_module'
    layer.zero_grad()
    layer(feature.detach())
    result = loss(layer, teacher_feature, target)
    result = result if isinstance(result, dict) else {'loss': result}
    value = result['loss']
    assert value.shape == () and torch.isfinite(value) and value > 0, value
    assert all(not v.requires_grad for key, v in result.items() if key != 'loss'), 'diagnostics carry gradients'
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters()), \
        'no gradient reached the layer'


# -- the logit-loss contract --------------------------------------------------------------------------------------
def _logits(n: int, c: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    """Student and teacher logits (N, C) of spread 3, both requiring gradients (to see which one gets one), and
    labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g) * 3).to(dtype).requires_grad_()
    t = (torch.randn(n, c, generator=g) * 3).to(dtype).requires_grad_()
    return s, t, torch.randint(0, c, (n,), generator=g)


def _name(loss: nn.Module) -> str:
    return type(loss).__name__


def _takes_weight(loss: nn.Module) -> bool:
    import inspect
    return 'weight' in inspect.signature(loss.forward).parameters


def check_loss_value_and_gradient(loss: nn.Module) -> None:
    """A 0-dim float32 finite value whose gradient reaches the student's logits (finite, not all 0), and never the
    teacher's for a teacher-based loss (``teacher_based``, default True), at N = 8, 1, 3 and C = 10, 10, 1000."""
    for n, c in ((8, 10), (1, 10), (3, 1000)):
        s, t, y = _logits(n, c)
        value = loss(s, t, y)
        shown = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        assert isinstance(value, torch.Tensor) and value.dim() == 0, \
            f'{_name(loss)} returned {shown}: a 0-dim tensor is the contract'
        assert value.dtype == torch.float32, f'{_name(loss)} returned {value.dtype}: a float32 value is the contract'
        assert torch.isfinite(value), f'{_name(loss)} = {value.item()} at N={n}, C={c}'
        assert value.requires_grad, f'{_name(loss)}: its value carries no gradient (is the student detached?)'
        value.backward()
        assert s.grad is not None, (f'{_name(loss)}: no gradient reaches the student\'s logits; forward takes '
                                    '(student_logits, teacher_logits, target, weight=None), the student first')
        assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0, f'{_name(loss)}: student gradient {s.grad}'
        if getattr(type(loss), 'teacher_based', True):
            assert t.grad is None, (f'{_name(loss)}: a gradient reaches the teacher\'s logits: detach them, or, if '
                                    'forward takes the teacher\'s logits first, swap its arguments (the student\'s '
                                    'come first)')


def check_loss_half_precision(loss: nn.Module) -> None:
    """float16 and bfloat16 inputs (an AMP run) give a finite float32 value and a finite gradient, a confident row
    (logits -60 ... 60, where log(0) traps in low precision) included."""
    for dtype in (torch.float16, torch.bfloat16):
        s, t, y = _logits(16, 100, dtype)
        s.data[0] = torch.linspace(-60, 60, 100).to(dtype)
        value = loss(s, t, y)
        assert value.dtype == torch.float32 and torch.isfinite(value), f'{_name(loss)} in {dtype}: {value}'
        value.backward()
        assert torch.isfinite(s.grad.float()).all(), f'{_name(loss)} in {dtype}: gradient not finite'


def check_loss_constant_logits(loss: nn.Module) -> None:
    """Constant student logits, an all-zero teacher, or both (a dead head, an untrained teacher) give a finite value
    and gradient, never NaN or inf (a spread of 0 divides nothing)."""
    for which in ('student', 'teacher', 'both'):
        s, t, y = _logits(4, 10)
        if which in ('student', 'both'):
            s = torch.full((4, 10), 2.5, requires_grad=True)
        if which in ('teacher', 'both'):
            t = torch.zeros(4, 10)
        value = loss(s, t, y)
        assert torch.isfinite(value), f'{_name(loss)} with constant {which} logits: {value}'
        value.backward()
        assert torch.isfinite(s.grad).all(), f'{_name(loss)} with constant {which} logits: gradient not finite'


def check_loss_empty_batch(loss: nn.Module) -> None:
    """No rows (an image without RoIs, a batch whose teacher rows were all left out): 0, still in the graph, so
    every rank's backward runs, and a zero gradient of the right shape."""
    s = torch.zeros(0, 10, requires_grad=True)
    value = loss(s, torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0 and value.requires_grad, \
        f'{_name(loss)} of an empty batch: {value} (0 in the graph is the contract)'
    value.backward()
    assert s.grad is not None and s.grad.shape == (0, 10), f'{_name(loss)} of an empty batch: no gradient'


def _refused(call: Any, error: type, pattern: str, what: str) -> None:
    try:
        call()
    except error as err:
        assert re.search(pattern, str(err)), f'{what}: {type(err).__name__}({err}) does not match {pattern!r}'
        return
    raise AssertionError(f'{what}: not refused (a {error.__name__} matching {pattern!r} is the contract)')


def check_loss_refuses_fewer_than_two_classes(loss: nn.Module) -> None:
    """A softmax over one class is 1 whatever its logit, so every loss would be a silent 0: C < 2 is a ValueError
    with a message (its words are the loss's own; kdplug's say 'needs at least 2 classes' and 'check num_classes':
    :func:`kdplug.losses.functional.check_class_count`)."""
    for n, c in ((4, 1), (0, 0)):
        s, t = torch.zeros(n, c, requires_grad=True), torch.zeros(n, c)
        _refused(lambda: loss(s, t, torch.zeros(n, dtype=torch.long)), ValueError, r'\w',
                 f'{_name(loss)} with C = {c}')


def check_loss_row_weights(loss: nn.Module) -> None:
    """For a loss whose forward takes ``weight`` (the row weights of tasks and of the distiller's left-out teacher
    rows): all ones is the unweighted loss; weight 0 removes the row from the value and the gradient
    (sum(w * l) / sum(w)); another shape ((N, 1), (1,), N + 1) or a negative, NaN or inf weight is a ValueError
    naming it (:func:`kdplug.losses.functional.check_row_weights`). A loss without ``weight`` passes: the distiller
    refuses it where rows are weighed."""
    if not _takes_weight(loss):
        return
    s, t, y = _logits(6, 10)
    torch.testing.assert_close(loss(s, t, y, weight=torch.ones(6)), loss(s, t, y),
                               msg=lambda m: f'{_name(loss)}: weights of 1 change the value. {m}')
    weighted = loss(s, t, y, weight=torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(weighted, loss(s[:5], t[:5], y[:5]),
                               msg=lambda m: f'{_name(loss)}: a row of weight 0 is not left out of the value. {m}')
    weighted.backward()
    assert s.grad[5].abs().max() == 0 and s.grad[:5].abs().max() > 0, \
        f'{_name(loss)}: a row of weight 0 gets a gradient, or the others none'
    s, t, y = _logits(4, 10)
    for weight in (torch.ones(4, 1), torch.ones(1), torch.ones(5)):
        _refused(lambda: loss(s, t, y, weight=weight), ValueError,
                 rf'weight of shape {re.escape(str(tuple(weight.shape)))}',
                 f'{_name(loss)} with row weights of shape {tuple(weight.shape)} for 4 rows')
    for bad in (-1.0, float('nan'), float('inf')):
        _refused(lambda: loss(s, t, y, weight=torch.tensor([1.0, bad, 1.0, 1.0])), ValueError,
                 'weights must be finite and >= 0', f'{_name(loss)} with a row weight {bad}')


#: The logit-loss contract, one check per property (tests/test_loss_conformance.py runs each on every registered
#: loss).
LOGIT_LOSS_CHECKS = (check_loss_value_and_gradient, check_loss_half_precision, check_loss_constant_logits,
                     check_loss_empty_batch, check_loss_refuses_fewer_than_two_classes, check_loss_row_weights)


def check_logit_loss(loss: Union[Mapping, nn.Module]) -> None:
    """The whole contract of a teacher-based logit loss (``forward(student_logits, teacher_logits, target,
    weight=None)``): every check of :data:`LOGIT_LOSS_CHECKS`. ``loss``: a built loss, or its config
    (``dict(type='MyLoss')``: built from kdplug's registry, as a distiller's ``losses`` builds it; from its defaults,
    it is the paper's setting)."""
    if isinstance(loss, type):
        raise TypeError(f'check_logit_loss({loss.__name__}): pass a built loss ({loss.__name__}()) or its config '
                        f'(dict(type={loss.__name__!r})), not the class')
    if isinstance(loss, Mapping):
        from kdplug.registry import MODELS
        loss = MODELS.build(copy.deepcopy(dict(loss)))
    failed = []
    for check in LOGIT_LOSS_CHECKS:  # every property, so that one defect does not hide another
        try:
            check(loss)
        except Exception as err:  # an assertion, or the loss's own error on the contract's inputs
            failed.append(f'{check.__name__}: {type(err).__name__}: {err}')
    if failed:
        raise AssertionError(f'{_name(loss)} breaks {len(failed)} of the {len(LOGIT_LOSS_CHECKS)} properties of the '
                             'logit-loss contract (docs/plugins.md):\n' + '\n'.join(failed))
