"""kdplug's tasks and teacher sources through one conformance test of their kind (the checks: kdplug.testing, which
a plugin's own tests call with its examples).

The contract (kdplug/tasks/base.py, kdplug/teachers/base.py): a task's student forward gives rows of logits with
their targets (and the student's own losses); a teacher network scores exactly those rows; features are recorded
at named positions; the distiller's losses over the rows are finite and reach the student. A teacher source gives
logits aligned with the rows. A task or source of kdplug's registered without an example here fails the test that
lists them.
"""
import copy
import importlib.util
from dataclasses import replace
from typing import Callable, Dict

import pytest
import torch
from torch import nn

from conftest import require_detection_stack

pytestmark = pytest.mark.usefixtures('one_thread')

NUM_CLASSES = 3


# -- an example batch and models per task ---------------------------------------------------------------------------
def classifier_cfg(backbone: str = 'kdplug.ResNet8') -> dict:
    return dict(type='ImageClassifier', backbone=dict(type=backbone), neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=64,
                          loss=dict(type='CrossEntropyLoss')))


def classification_example() -> dict:
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    samples = [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(4)]
    return dict(task=dict(type='ClassificationTask'), student=classifier_cfg(), inputs=torch.randn(4, 3, 32, 32),
                data_samples=samples, position='layer2')


SMALL_DETECTOR = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=[64, 128, 256, 512]),
                      rpn_head=dict(anchor_generator=dict(scales=[2])))


def faster_rcnn_cfg() -> dict:
    return dict(copy.deepcopy(SMALL_DETECTOR), cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                roi_head=dict(bbox_head=dict(num_classes=NUM_CLASSES)),
                train_cfg=dict(rcnn=dict(sampler=dict(num=32))))


def mask_rcnn_cfg() -> dict:
    return dict(copy.deepcopy(SMALL_DETECTOR), cfg_path='mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
                roi_head=dict(bbox_head=dict(num_classes=NUM_CLASSES), mask_head=dict(num_classes=NUM_CLASSES)),
                train_cfg=dict(rcnn=dict(sampler=dict(num=32))))


def cascade_rcnn_cfg() -> dict:
    from mmengine.hub import get_config
    heads = get_config('mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py').model.roi_head.bbox_head
    heads = [dict(head.to_dict(), num_classes=NUM_CLASSES) for head in heads]
    rcnn = get_config('mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py').model.train_cfg.rcnn
    rcnn = [dict(stage.to_dict(), sampler=dict(stage.sampler.to_dict(), num=32)) for stage in rcnn]
    return dict(copy.deepcopy(SMALL_DETECTOR), cfg_path='mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py',
                roi_head=dict(bbox_head=heads), train_cfg=dict(rcnn=rcnn))


def detection_batch() -> tuple:
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    torch.manual_seed(0)
    samples = []
    boxes = [[10, 12, 60, 70], [50, 20, 120, 90]]
    masks = np.zeros((2, 96, 128), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):  # filled boxes: masks for Mask R-CNN's mask head
        masks[k, y1:y2, x1:x2] = 1
    for i in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(96, 128), pad_shape=(96, 128),
                                             scale_factor=(1.0, 1.0), batch_input_shape=(96, 128)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                           labels=torch.tensor([i % NUM_CLASSES, 2]),
                                           masks=BitmapMasks(masks, 96, 128))
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    return torch.randn(2, 3, 96, 128), samples


def detection_example(cascade: bool = False, mask: bool = False) -> dict:
    require_detection_stack()
    inputs, samples = detection_batch()
    student = cascade_rcnn_cfg() if cascade else mask_rcnn_cfg() if mask else faster_rcnn_cfg()
    return dict(task=dict(type='TwoStageDetectionTask'), student=student, inputs=inputs, data_samples=samples,
                position='layer3')


EXAMPLES: Dict[str, Dict[str, Callable[[], dict]]] = {
    'ClassificationTask': {'classifier': classification_example},
    'TwoStageDetectionTask': {'faster-rcnn': detection_example, 'mask-rcnn': lambda: detection_example(mask=True),
                              'cascade-rcnn': lambda: detection_example(cascade=True)},
}
CASES = [(task, name) for task, examples in EXAMPLES.items() for name in examples]


def build(example: dict):
    from kdplug.registry import TASKS
    task = TASKS.build(example['task'])
    student = task.build_model(task.model_config(example['student']), 'student')
    return task, student


def registered(kind: str) -> set:
    """What kdplug's own plugins contribute to a kind (``'kdplug_tasks'``...). A third-party plugin's tasks and
    sources are held to the contract by its own tests, with :mod:`kdplug.testing` and its own examples."""
    from kdplug.plugins import BUILTIN_PLUGINS, plugin_infos
    return {name for info in plugin_infos() if info.module in BUILTIN_PLUGINS
            for name in info.contributions.get(kind, [])}


def test_every_registered_task_has_a_conformance_example():
    from kdplug.registry import TASKS
    tasks = registered('kdplug_tasks')
    assert {'ClassificationTask', 'TwoStageDetectionTask'} <= tasks <= set(TASKS.all_names())
    missing = sorted(tasks - set(EXAMPLES))
    assert not missing, f'the tasks {missing} are registered without an example in EXAMPLES: not held to the contract'


# -- the task contract ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('task_name,example_name', CASES)
def test_a_teacher_network_scores_exactly_the_rows_of_the_student(task_name, example_name):
    """A teacher with the student's weights, both in eval mode, gives the student's logits row for row: the rows
    are the same rows (images, or the student's sampled RoIs, stage by stage), in the same order."""
    from kdplug.testing import check_task_rows
    example = EXAMPLES[task_name][example_name]()
    check_task_rows(example['task'], example['student'], example['inputs'], example['data_samples'])


@pytest.mark.parametrize('task_name,example_name', CASES)
def test_features_are_recorded_at_named_positions_and_stages_named_with_their_channels(task_name, example_name):
    """Features at named positions, unknown ones refused with the positions there are; the stages a task names (the
    weak head's choices) are positions, and the channels it reads for a stage are those of its feature."""
    from kdplug.testing import check_task_features
    example = EXAMPLES[task_name][example_name]()
    check_task_features(example['task'], example['student'], example['inputs'], example['data_samples'],
                        example['position'])
    task, student = build(example)
    with pytest.raises(ValueError, match="no position 'layer9'.*layer1"):
        task.check_positions(student, ['layer9'], 'student')


@pytest.mark.parametrize('task_name,example_name', CASES)
def test_a_distiller_step_of_every_task_is_finite_and_reaches_the_student(task_name, example_name, tmp_path):
    from kdplug.testing import check_task_in_a_distiller_step
    example = EXAMPLES[task_name][example_name]()
    check_task_in_a_distiller_step(example['task'], example['student'], example['inputs'], example['data_samples'],
                                   tmp_path)


def cascade_distiller(tmp_path, stage_weights: list) -> tuple:
    """A Cascade R-CNN distiller (KD at T = 1) with the given stage weights, its teacher the student's own copy."""
    from kdplug.registry import MODELS
    example = detection_example(cascade=True)
    _, teacher = build(example)
    torch.save({'state_dict': teacher.state_dict()}, tmp_path / 'teacher.pth')
    distiller = MODELS.build(dict(
        type='Distiller', task=dict(type='TwoStageDetectionTask', stage_weights=stage_weights),
        student=example['student'],
        teacher=dict(type='CheckpointTeacher', model=example['student'], checkpoint=str(tmp_path / 'teacher.pth')),
        losses=dict(kd=dict(type='KDLoss', temperature=1.0))))
    return distiller, example


def test_cascade_stages_are_weighted_by_the_stage_weights(tmp_path):
    """distill.s<i>.loss_<name> = stage_weights[i] x the loss over stage i's RoIs (each stage its own rows)."""
    distiller, example = cascade_distiller(tmp_path, [1.0, 0.5, 0.25])
    seen = []
    kd = distiller.losses['kd']
    original = kd.forward

    def forward(s, t, target=None, weight=None):
        value = original(s, t, target, weight)
        if torch.is_grad_enabled():  # the distiller's own calls (its first-step check of the weights runs without)
            seen.append(value)
        return value
    kd.forward = forward
    losses = distiller.loss(example['inputs'], example['data_samples'])
    assert [key for key in losses if key.startswith('distill.s')] == [
        'distill.s0.loss_kd', 'distill.s1.loss_kd', 'distill.s2.loss_kd']
    for stage, weight in enumerate((1.0, 0.5, 0.25)):
        torch.testing.assert_close(losses[f'distill.s{stage}.loss_kd'], weight * seen[stage])
    assert {'student.s0.loss_cls', 'student.s2.loss_bbox', 'student.loss_rpn_cls'} <= set(losses)


def test_a_stage_of_weight_zero_is_neither_scored_nor_counted(tmp_path):
    """stage_weights=[0, 0, 1]: distill.num_rois counted the RoIs of all three stages (3072 for 1024 distilled) and
    the teacher scored the two stages that teach nothing."""
    distiller, example = cascade_distiller(tmp_path, [0.0, 0.0, 1.0])
    scored, rows = [], []
    forward = distiller.teacher.model.roi_head._bbox_forward
    distiller.teacher.model.roi_head._bbox_forward = lambda stage, *args: scored.append(stage) or forward(stage, *args)
    kd = distiller.losses['kd']
    original = kd.forward
    kd.forward = lambda s, t, target=None, weight=None: rows.append(len(s)) or original(s, t, target, weight)
    losses = distiller.loss(example['inputs'], example['data_samples'])
    assert [key for key in losses if key.startswith('distill.s')] == ['distill.s2.loss_kd'] and scored == [2]
    assert losses['distill.num_rois'].item() == rows[0] > 0  # background='include': every row of stage 2
    from kdplug.registry import TASKS
    with pytest.raises(ValueError, match='one of them at least > 0'):
        TASKS.build(dict(type='TwoStageDetectionTask', stage_weights=[0.0, 0.0, 0.0]))


def test_a_box_head_whose_logits_are_not_one_softmax_is_refused():
    """mmdet's LVIS heads (SeesawLoss): 82 columns for 80 classes, 80 class logits and 2 objectness logits, were
    distilled as one 82-way softmax with background RoIs labelled 80: the objectness-positive column."""
    require_detection_stack()
    from kdplug.registry import TASKS
    task = TASKS.build(dict(type='TwoStageDetectionTask'))
    cfg = faster_rcnn_cfg()
    cfg['roi_head']['bbox_head'].update(loss_cls=dict(type='SeesawLoss', num_classes=NUM_CLASSES, loss_weight=1.0))
    with pytest.raises(ValueError, match=r"box head classifies with SeesawLoss, whose logits are not one softmax over "
                                         r"the classes and background.*loss_cls=dict\(type='CrossEntropyLoss'"):
        task.build_model(task.model_config(cfg), 'student')


def test_stage_weights_must_match_the_stages():
    example = detection_example(cascade=False)
    from kdplug.registry import TASKS
    task = TASKS.build(dict(type='TwoStageDetectionTask', stage_weights=[1.0, 0.5]))
    with pytest.raises(ValueError, match='stage_weights has 2 weights.*1 stages'):
        task.build_model(task.model_config(example['student']), 'student')


def test_a_faster_rcnn_teacher_cannot_teach_a_cascade_student(tmp_path):
    from kdplug.registry import MODELS
    student = detection_example(cascade=True)['student']
    teacher_cfg = faster_rcnn_cfg()
    with pytest.raises(ValueError, match=r"has 3 stage\(s\), the teacher's 1.*Cascade R-CNN teacher"):
        MODELS.build(dict(type='Distiller', task='TwoStageDetectionTask', student=student,
                          teacher=dict(type='CheckpointTeacher', model=teacher_cfg, checkpoint='unused.pth'),
                          losses=dict(kd=dict(type='KDLoss'))))


# -- the teacher-source contract ------------------------------------------------------------------------------------
def checkpoint_source(tmp_path) -> dict:
    from kdplug.tasks.classification import ClassificationTask
    task = ClassificationTask()
    teacher = task.build_model(classifier_cfg('kdplug.ResNet14'), 'teacher')
    torch.save({'state_dict': teacher.state_dict()}, tmp_path / 'teacher.pth')
    return dict(type='CheckpointTeacher', model=classifier_cfg('kdplug.ResNet14'),
                checkpoint=str(tmp_path / 'teacher.pth'))


SOURCES = {
    'CheckpointTeacher': checkpoint_source,
    'EMATeacher': lambda tmp_path: dict(type='EMATeacher', xi=0.9),
    'WeakHeadTeacher': lambda tmp_path: dict(type='WeakHeadTeacher', position='layer2'),
}


def test_every_registered_teacher_source_has_a_conformance_example():
    from kdplug.registry import TEACHERS
    sources = registered('kdplug_teachers')
    assert {'CheckpointTeacher', 'EMATeacher', 'WeakHeadTeacher', 'CachedTeacher'} <= sources
    assert set(SOURCES) <= set(TEACHERS.all_names())
    # CachedTeacher is held to the contract in tests/test_teacher_cache.py (it needs a store made first)
    missing = sorted(sources - set(SOURCES) - {'CachedTeacher'})
    assert not missing, f'the teacher sources {missing} are registered without an example in SOURCES'


@pytest.mark.parametrize('source', sorted(SOURCES))
def test_a_teacher_source_gives_logits_for_the_rows_of_the_student(source, tmp_path):
    from kdplug.testing import check_teacher_source
    example = classification_example()
    # a head of the student (the weak head) is trained by a self-distillation loss only: USKD's (refused with KD)
    loss = dict(type='USKDLoss' if source == 'WeakHeadTeacher' else 'KDLoss')
    check_teacher_source(SOURCES[source](tmp_path), example['task'], example['student'], example['inputs'],
                         example['data_samples'], loss)


@pytest.mark.parametrize('answer,error', [
    (lambda logits: logits, r"EMATeacher.teach returned a list: a teacher source returns \(logits, features\)"),
    (lambda logits: ([], {}), r"EMATeacher.teach gave 0 groups of logits for the student's 1 group\(s\) of rows"),
    (lambda logits: (logits[0], {}), r'EMATeacher.teach gave a Tensor of logits .* one \(N, C\) tensor per group'),
    # half the rows: the loss said "must both be (N, C) with the same number of classes", naming neither
    (lambda logits: ([logits[0][:2]], {}), r"EMATeacher.teach gave \(2, 3\) logits for group 0 of the student's "
                                           r"rows, whose logits are \(4, 3\): one teacher row per student row"),
])
def test_a_teacher_source_answering_outside_the_contract_is_named(answer, error):
    """A plugin's source that returns only its logits, or fewer groups than the student's rows (zip would have left
    rows undistilled without a word), is named with the contract."""
    from kdplug.registry import MODELS
    example = classification_example()
    distiller = MODELS.build(dict(type='Distiller', task=example['task'], student=example['student'],
                                  teacher=SOURCES['EMATeacher'](None), losses=dict(kd=dict(type='KDLoss'))))
    distiller.teacher.hook_attached = True
    teach = distiller.teacher.teach
    distiller.teacher.teach = lambda *args, **kwargs: answer(teach(*args, **kwargs)[0])
    with pytest.raises((TypeError, ValueError), match=error):
        distiller.loss(example['inputs'], example['data_samples'])


def ema_distiller(losses: dict = None, task: dict = None):
    """A classification distiller with an EMA teacher, ready for a step on :func:`classification_example`."""
    from kdplug.registry import MODELS
    example = classification_example()
    distiller = MODELS.build(dict(type='Distiller', task=task or example['task'], student=example['student'],
                                  teacher=SOURCES['EMATeacher'](None), losses=losses or dict(kd=dict(type='KDLoss'))))
    distiller.teacher.hook_attached = True
    return distiller, example


@pytest.mark.parametrize('change,error', [
    (lambda out: out.rows[0], r'ClassificationTask.student_forward returned LogitRows: a task returns a '
                              r'kdplug.tasks.base.StudentOutput whose rows are a list of LogitRows'),
    (lambda out: replace(out, rows=out.rows[0]), 'returned a StudentOutput whose rows are a LogitRows'),
    # mmengine sums every key with "loss": 15001 was added to the total, or the real distill.loss_kd replaced
    (lambda out: replace(out, diagnostics={'lossy_rows': torch.tensor(15000.0)}),
     r"gave the diagnostics \['lossy_rows'\]: mmengine adds every logged key that contains \"loss\""),
    (lambda out: replace(out, diagnostics={'loss_kd': torch.tensor(0.0)}), r"diagnostics \['loss_kd'\]"),
])
def test_a_task_answering_outside_the_contract_is_named(change, error):
    distiller, example = ema_distiller()
    forward = distiller.task.student_forward
    distiller.task.student_forward = lambda *args, **kwargs: change(forward(*args, **kwargs))
    with pytest.raises((TypeError, ValueError), match=error):
        distiller.loss(example['inputs'], example['data_samples'])


def test_row_weights_from_a_task_that_says_it_weighs_none_are_not_dropped_silently(test_losses):
    """A task that gives row weights but leaves weighs_rows False: a loss without weight= learnt from the rows
    the task left out, without a word."""
    distiller, example = ema_distiller(losses=dict(plain=dict(type='RowsOnlyLoss')))
    forward = distiller.task.student_forward

    def weighed(*args, **kwargs):
        out = forward(*args, **kwargs)
        return replace(out, rows=[replace(out.rows[0], weight=torch.tensor([1.0, 0.0, 1.0, 1.0]))])
    distiller.task.student_forward = weighed
    with pytest.raises(ValueError, match=r"gave row weights, but the losses \['plain'\] take none.*Set weighs_rows "
                                         r"= True on ClassificationTask"):
        distiller.loss(example['inputs'], example['data_samples'])


@pytest.fixture
def test_losses():
    """The contract-breaking losses of these tests, registered for the test only (the conformance test runs every
    registered loss)."""
    from kdplug.registry import MODELS
    classes = (RowsOnlyLoss, VectorLoss, NoTargetLoss)
    for cls in classes:
        MODELS.register_module(name=cls.__name__, module=cls, force=True)
    yield
    for cls in classes:
        MODELS._module_dict.pop(cls.__name__, None)


class VectorLoss(nn.Module):
    def forward(self, student_logits, teacher_logits, target=None, weight=None):
        return (student_logits - teacher_logits).pow(2).mean(-1)


class NoTargetLoss(nn.Module):
    def forward(self, student_logits, teacher_logits):
        return (student_logits - teacher_logits).pow(2).mean()


def test_a_loss_outside_the_contract_is_named(test_losses):
    """A loss returning one value per row trained on mmengine's mean of it; a forward without target, or a model
    given as a loss, failed at the first step with Python's TypeError."""
    from kdplug.registry import MODELS
    distiller, example = ema_distiller(losses=dict(vec=dict(type='VectorLoss')))
    with pytest.raises(TypeError, match=r'losses.vec \(VectorLoss\) returned \(4,\), not a scalar tensor'):
        distiller.loss(example['inputs'], example['data_samples'])
    for name, error in (('NoTargetLoss', r'losses.bad \(NoTargetLoss\) is not a logit loss: its forward\('
                                         r'student_logits, teacher_logits\) cannot take \(student_logits, '
                                         r'teacher_logits, target\)'),
                        ('ResNet8', r'losses.bad \(ResNet8\) is not a logit loss'),
                        # OpenMMLab's losses, forward(pred, label, weight, ...): the target became their weight
                        # (class 0: a silent 0), or the step failed on two weights
                        ('mmpretrain.CrossEntropyLoss', r"losses.bad \(CrossEntropyLoss\) is not a kdplug logit "
                                                        r"loss: .* would take the targets as 'weight'"),
                        ('mmdet.KnowledgeDistillationKLDivLoss', r'KnowledgeDistillationKLDivLoss\) is not a kdplug '
                                                                 r'logit loss.*Use a kdplug loss')):
        if name.startswith('mmdet.') and importlib.util.find_spec('mmdet') is None:
            continue  # tools/install.sh's classification mode has no mmdet
        with pytest.raises(TypeError, match=error):
            MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(),
                              teacher=SOURCES['EMATeacher'](None), losses=dict(bad=dict(type=name))))


def test_a_self_distillation_loss_refuses_a_teacher_s_logits(tmp_path):
    """USKD's second input is the student's weak head, trained with it: a teacher network's frozen logits took its
    place without a word."""
    from kdplug.registry import MODELS
    with pytest.raises(ValueError, match=r"the losses \['uskd'\] \(USKDLoss\) are self-distillation.*EMATeacher "
                                         r"gives a teacher's: use teacher=dict\(type='WeakHeadTeacher'"):
        MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(),
                          teacher=SOURCES['EMATeacher'](None), losses=dict(uskd=dict(type='USKDLoss'))))


def test_a_missing_checkpoint_names_the_fix():
    from kdplug.registry import TEACHERS
    with pytest.raises(ValueError, match="checkpoint is missing.*CheckpointTeacher"):
        TEACHERS.build(dict(type='CheckpointTeacher', model=classifier_cfg(), checkpoint=None))


def test_a_distiller_without_a_teacher_source_lists_them():
    from kdplug.registry import MODELS
    with pytest.raises(ValueError, match='give a teacher source.*CheckpointTeacher, EMATeacher, WeakHeadTeacher'):
        MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(), teacher=None,
                          losses=dict(kd=dict(type='KDLoss'))))


class RowsOnlyLoss(nn.Module):
    def forward(self, student_logits, teacher_logits, target=None):
        return (student_logits - teacher_logits).pow(2).mean()


def test_a_task_that_weighs_rows_refuses_losses_without_weight():
    from kdplug.registry import MODELS
    require_detection_stack()
    MODELS.register_module(name='RowsOnlyLoss', module=RowsOnlyLoss, force=True)
    try:
        with pytest.raises(ValueError, match=r"weighs rows.*\['plain'\] \(RowsOnlyLoss\) take no row weights"):
            MODELS.build(dict(type='Distiller', task=dict(type='TwoStageDetectionTask', background='exclude'),
                              student=faster_rcnn_cfg(), teacher=dict(type='EMATeacher'),
                              losses=dict(plain=dict(type='RowsOnlyLoss'))))
    finally:
        MODELS._module_dict.pop('RowsOnlyLoss', None)


@pytest.mark.parametrize('position', ['out', 'layer3'])
def test_the_weak_head_refuses_the_stage_the_students_own_head_reads(position):
    """The suggested stages are stages, not the stem's single layers (it suggested bn1)."""
    from kdplug.registry import MODELS
    with pytest.raises(ValueError, match=f"weak head reads '{position}', the last stage.*e.g. layer1, layer2$"):
        MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(),
                          teacher=dict(type='WeakHeadTeacher', position=position),
                          losses=dict(uskd=dict(type='USKDLoss'))))


@pytest.mark.parametrize('in_channels', [128, 0, '32'])
def test_the_weak_head_refuses_in_channels_its_stage_does_not_give(in_channels):
    """A wrong in_channels built, then failed at the first step with torch's "mat1 and mat2 shapes cannot be
    multiplied"."""
    from kdplug.registry import MODELS
    with pytest.raises(ValueError, match=f"in_channels={in_channels!r}, but the student's 'layer2' gives 32 channels"):
        MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(),
                          teacher=dict(type='WeakHeadTeacher', position='layer2', in_channels=in_channels),
                          losses=dict(uskd=dict(type='USKDLoss'))))


def test_the_students_initial_weights_do_not_depend_on_the_teacher_source(tmp_path):
    """Building a checkpoint teacher draws no random numbers the student's init_weights would see: the same seed
    gives the same student whether its teacher's logits come from a network, an EMA or elsewhere."""
    from kdplug.registry import MODELS
    source = checkpoint_source(tmp_path)
    students = []
    for teacher in (source, dict(type='EMATeacher', xi=0.9)):
        torch.manual_seed(0)
        distiller = MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(),
                                      teacher=teacher, losses=dict(kd=dict(type='KDLoss'))))
        distiller.init_weights()  # what mmengine's Runner does after building the model
        students.append(distiller.student.state_dict())
    assert all(torch.equal(students[0][key], students[1][key]) for key in students[0])


class KeywordsLoss(nn.Module):
    def forward(self, student_logits, teacher_logits, target=None, **kwargs):
        return (kwargs.get('weight', 1.0) * (student_logits - teacher_logits).pow(2).mean(-1)).mean()


def test_a_loss_taking_keywords_takes_row_weights():
    """``**kwargs`` can take ``weight=``: such a loss is not refused where rows are weighed, a loss without either
    is."""
    from kdplug.distillers.distiller import takes_weight
    assert takes_weight(KeywordsLoss()) and not takes_weight(RowsOnlyLoss())


def test_the_distiller_logs_its_losses_and_names_an_option_given_to_a_loss_it_does_not_have(capsys):
    """--cfg-options model.losses.kdd.temperature=2 (a typo of kd) gave "a model config must be a dict with a type
    key"; a loss inherited from a _base_ config trains beside the config's own (mmengine merges dicts): the build
    log lists every loss."""
    from mmengine.logging import MMLogger
    from kdplug.registry import MODELS
    example = classification_example()
    cfg = dict(type='Distiller', task=example['task'], student=example['student'], teacher=dict(type='EMATeacher'),
               losses=dict(kd=dict(type='KDLoss'), normkd=dict(type='NormKDLoss')))
    logged = []
    logger = MMLogger.get_current_instance()
    original = logger.log
    logger.log = lambda level, message, *args, **kwargs: logged.append(message)  # print_log's call
    try:
        MODELS.build(cfg)
    finally:
        logger.log = original
    assert any('losses kd: KDLoss(Temperature(4.0)' in m and '; normkd: NormKDLoss(' in m and '_delete_=True' in m
               for m in logged), logged
    cfg['losses']['kdd'] = dict(temperature=2)
    with pytest.raises(ValueError, match=r"losses.kdd = \{'temperature': 2\} has no type \(did you mean losses.kd\?\)"):
        MODELS.build(cfg)
    # None drops a loss (--cfg-options model.losses.kd=None), as None switches a default hook off
    cfg['losses'] = dict(kd=None, normkd=dict(type='NormKDLoss'))
    assert list(MODELS.build(cfg).losses) == ['normkd']
    cfg['losses'] = dict(kd=None)
    with pytest.raises(ValueError, match=r'a distiller needs at least one loss, .*\(the config set kd to None\)'):
        MODELS.build(cfg)


@pytest.mark.parametrize('change,error', [
    (dict(losses=[dict(type='KDLoss')]), r"losses=\[\{'type': 'KDLoss'\}\]: losses is a dict of named losses"),
    (dict(losses=dict(type='KDLoss')),
     r"losses=\{'type': 'KDLoss'\} is one loss: .*losses=dict\(kd=dict\(type='KDLoss'"),
    (dict(losses=dict(kd=dict(type='KDLoss', loss_weight='abc'))), "losses.kd: loss_weight must be a number"),
    (dict(student=None), r"model.student: the student's config must be a dict, got None: e.g. dict\(cfg_path="),
    (dict(teacher=None), 'teacher=None: give a teacher source'),
    (dict(teacher=dict(type='CheckpointTeacher', model=None, checkpoint='t.pth')),
     "model.teacher.model: the teacher's config must be a dict, got None"),
])
def test_a_distiller_config_of_the_wrong_shape_is_named(change, error):
    """Each failed in Python's words ('list' object has no attribute 'items', 'NoneType' object is not iterable,
    missing 1 required positional argument: 'teacher'), or named the wrong key (losses.type.type=KDLoss)."""
    from kdplug.registry import MODELS
    example = classification_example()
    cfg = dict(type='Distiller', task=example['task'], student=example['student'], teacher=dict(type='EMATeacher'),
               losses=dict(kd=dict(type='KDLoss')))
    cfg.update(change)
    if change.get('teacher', 0) is None:
        del cfg['teacher']  # a config that leaves it out
    with pytest.raises((TypeError, ValueError), match=error):
        MODELS.build(cfg)


def test_a_task_or_source_missing_part_of_the_contract_says_which_part():
    """A plugin's task without scope got mmengine's "the 'package' argument is required to perform a relative
    import"; a method left out, a bare NotImplementedError after the first validation."""
    from kdplug.tasks.base import Task
    from kdplug.teachers.base import TeacherSource

    class HalfTask(Task):
        pass
    with pytest.raises(ValueError, match=r"HalfTask.scope is empty: set it to the OpenMMLab registry scope"):
        HalfTask().build_model(classifier_cfg(), 'student')
    with pytest.raises(NotImplementedError, match=r'HalfTask does not implement student_forward\(\).*"Writing a '
                                                  r'task"'):
        HalfTask().student_forward(None, None, [])

    class HalfSource(TeacherSource):
        pass
    with pytest.raises(NotImplementedError, match=r'HalfSource does not implement teach\(\)'):
        HalfSource().teach(HalfTask(), None, [], None)


def test_a_task_or_teacher_option_given_to_the_distiller_says_where_it_goes():
    """--cfg-options model.background=exclude: "has no key 'background'" without saying it is the task's option."""
    from kdplug.registry import MODELS
    with pytest.raises(TypeError, match=r"has no key 'background', 'checkpoint' \(model.task.background is an option "
                                        r"of TwoStageDetectionTask\) \(model.teacher.checkpoint is an option of "
                                        r"CheckpointTeacher\)"):
        MODELS.build(dict(type='Distiller', task=dict(type='TwoStageDetectionTask'), student={},
                          teacher=dict(type='CheckpointTeacher', model={}, checkpoint='x'), losses={},
                          background='exclude', checkpoint='y'))


@pytest.mark.parametrize('library, preprocessor, flag', [
    ('mmpretrain.models', 'ClsDataPreprocessor', 'to_rgb'),
    ('mmdet.models', 'DetDataPreprocessor', 'bgr_to_rgb'),
    ('mmseg.models', 'SegDataPreProcessor', 'bgr_to_rgb'),
])
def test_a_teacher_fed_the_other_channel_order_is_refused_whatever_the_library(library, preprocessor, flag):
    """The check read mmengine's private _channel_conversion: mmpretrain keeps the flag as to_rgb and mmseg as
    channel_conversion, so a BGR teacher for an RGB student passed for both."""
    from kdplug.tasks.base import Task
    if library != 'mmpretrain.models':
        require_detection_stack()  # mmcv's ops: mmdet and mmseg import them
    cls = getattr(pytest.importorskip(library), preprocessor)
    ours = cls(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], **{flag: True})
    teacher = nn.Module()
    teacher.data_preprocessor = cls(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], **{flag: False})
    with pytest.raises(ValueError, match='the teacher was configured with another image preprocessing'):
        Task.check_same_preprocessing(ours, teacher, 'teacher')
    teacher.data_preprocessor = cls(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], **{flag: True})
    Task.check_same_preprocessing(ours, teacher, 'teacher')


def test_a_checkpoint_teacher_trained_on_other_classes_is_refused(tmp_path, caplog):
    """Same count, other classes (a Cityscapes teacher for a COCO-stuff run) or the same classes in another order:
    the class count let both teach wrong columns without a word. Names that differ in a few places warn."""
    from kdplug.teachers.checkpoint import compare_classes
    run = ('airplane', 'automobile', 'bird', 'cat')
    assert compare_classes(run, run, 't.pth') is None
    with pytest.raises(ValueError, match=r"trained on the same classes in another order \(class 0: 'automobile' in "
                                         r"the teacher, 'airplane' here; class 1: 'airplane' in the teacher, "
                                         r"'automobile' here\)"):
        compare_classes(('automobile', 'airplane', 'bird', 'cat'), run, 't.pth')
    with pytest.raises(ValueError, match=r"trained on the classes of another dataset \(class 0: 'road'"):
        compare_classes(('road', 'sidewalk', 'building', 'cat'), run, 't.pth')
    assert compare_classes(('aeroplane', 'automobile', 'bird', 'cat'), run, 't.pth') == (
        "the teacher checkpoint 't.pth' names 1 of its classes otherwise than the run's dataset (class 0: 'aeroplane' "
        "in the teacher, 'airplane' here): if they are other classes, the teacher teaches wrong ones")
    # another count: 3 of COCO's classes with an 80-class teacher paired broccoli with the teacher's 'person'
    with pytest.raises(ValueError, match=r"trained on 4 classes \('airplane', 'automobile', 'bird', \.\.\.\), the "
                                         r"run's dataset has 2 \('bird', 'cat'\)"):
        compare_classes(run, ('bird', 'cat'), 't.pth')
    assert compare_classes(run, run[:2], 't.pth') is None  # the teacher's first classes, in order: aligned


def test_the_classes_a_checkpoint_records_reach_the_teacher_source(tmp_path):
    from kdplug.registry import MODELS
    example = classification_example()
    student = MODELS.build(dict(type='Distiller', task=example['task'], student=example['student'],
                                teacher=SOURCES['EMATeacher'](None), losses=dict(kd=dict(type='KDLoss')))).student
    classes = tuple(f'class{k}' for k in range(NUM_CLASSES))
    torch.save({'state_dict': student.state_dict(), 'meta': {'dataset_meta': {'classes': classes}}},
               tmp_path / 'teacher.pth')
    distiller = MODELS.build(dict(type='Distiller', task=example['task'], student=example['student'],
                                  teacher=dict(type='CheckpointTeacher', model=example['student'],
                                               checkpoint=str(tmp_path / 'teacher.pth')),
                                  losses=dict(kd=dict(type='KDLoss'))))
    assert distiller.teacher.classes == classes
    distiller.teacher.check_classes(classes)
    with pytest.raises(ValueError, match='the same classes in another order'):
        distiller.teacher.check_classes(classes[::-1])


def test_the_data_check_hook_shows_the_task_the_dataset_and_the_teacher_source_the_run_s_classes():
    import types

    from kdplug.engine.hooks import TeacherDataCheckHook
    seen = []
    source = types.SimpleNamespace(check_data=lambda dataset, num_images: seen.append(num_images),
                                   check_schedule=lambda seed, epochs: seen.append((seed, epochs)),
                                   check_classes=seen.append)
    dataset = type('Data', (list,), {'metainfo': {'classes': ['cat', 'dog']}})([0, 1, 2])  # 3 images
    task = types.SimpleNamespace(check_dataset=lambda dataset, student: seen.append((len(dataset), student)))
    runner = types.SimpleNamespace(model=types.SimpleNamespace(teacher=source, task=task, student='student'),
                                   cfg={'train_dataloader': {}, 'randomness': {'seed': 7}},
                                   train_loop=object(),  # iteration-based
                                   train_dataloader=types.SimpleNamespace(dataset=dataset))
    TeacherDataCheckHook().before_train(runner)
    assert seen == [(3, 'student'), 3, (7, None), ('cat', 'dog')]  # the task checks the annotations first


def test_a_loss_comparing_rows_is_refused_where_rows_are_not_images():
    """MLKD's batch and class levels build N x N matrices over the batch's rows: on a segmentor's 16k pixel rows,
    gigabytes, and on RoIs terms the paper does not define."""
    from kdplug.registry import MODELS
    require_detection_stack()
    with pytest.raises(ValueError, match=r"the losses \['mlkd'\] \(MLKDLoss\) compare the rows of a batch with each "
                                         r"other .* the rows of TwoStageDetectionTask are not images"):
        MODELS.build(dict(type='Distiller', task=dict(type='TwoStageDetectionTask'), student=faster_rcnn_cfg(),
                          teacher=dict(type='EMATeacher'), losses=dict(mlkd=dict(type='MLKDLoss'))))


def test_the_weak_head_with_only_teacher_based_losses_is_refused():
    """KD from the weak head alone: the head (trained by USKD's mu term) stayed at its random initialisation, and the
    student was distilled towards it."""
    from kdplug.registry import MODELS
    with pytest.raises(ValueError, match=r"the weak head \(WeakHeadTeacher\) is a head of the student that only a "
                                         r"self-distillation loss trains .* the losses \['kd'\]"):
        MODELS.build(dict(type='Distiller', task='ClassificationTask', student=classifier_cfg(),
                          teacher=dict(type='WeakHeadTeacher', position='layer2'), losses=dict(kd=dict(type='KDLoss'))))


def test_features_of_one_view_with_a_two_view_batch_name_the_transform_to_remove():
    """USKD with an MLKD dataset base: the message named neither the weak head nor the MultiView transform."""
    from kdplug.tasks.classification import ClassificationTask
    views = [torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)]
    with pytest.raises(ValueError, match=r"USKD's weak head\), but the batch brings 2: remove the MultiView transform"):
        ClassificationTask().student_forward(None, views, [], positions=('layer3',))
