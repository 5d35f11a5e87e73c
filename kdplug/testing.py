"""The conformance checks of kdplug's plugin contracts, for a plugin's own tests as for kdplug's.

kdplug's test suite runs every loss it finds registered, a plugin's too, through the loss contract (a loss builds
from its defaults). A task, a teacher source or a student-side module needs an example (a model, a batch, a store)
that only its author can give: kdplug's suite holds its own to the contract with the checks below, and a plugin's
suite calls the same checks with its examples::

    from kdplug.testing import check_task

    def test_my_task_keeps_kdplug_s_contract(tmp_path):
        check_task(dict(type='MyTask'), student_cfg, inputs, data_samples, position='layer2', work_dir=tmp_path)

Each check raises AssertionError (or the error kdplug itself raises) naming the part of the contract that fails.
kdplug's registries load when a check is called; pytest is not needed.
"""
import copy
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
