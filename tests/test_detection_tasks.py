"""The detection configs beyond a Faster R-CNN pair, each through a real training step (mmengine Runner) on real
coco128 images: Cascade R-CNN with NKD and NormKD (every stage distilled from the same stage of the teacher), the EMA
self-teacher on Faster R-CNN, letKD's layer inside a Faster R-CNN backbone.

Small models at 256 px keep it fast on CPU (ResNet-18-FPN, 128 sampled RoIs per image and stage, two images per
batch, two iterations); the helpers and the coco128 images are those of tests/test_detection_distill.py.
"""
import copy

import pytest
import torch

from conftest import require_detection_stack

require_detection_stack(module_level=True)  # mmdet + mmcv.ops: not in tools/install.sh's classification mode

import test_detection_distill as base  # noqa: E402
from runner_helpers import make_runner, scalars  # noqa: E402
from test_detection_distill import (  # noqa: E402
    DETECTION, NUM_CLASSES, SMALL, check_export_loads_in_plain_mmdet, distiller_cfg, finite, overrides,
    preprocess, recording_distill_losses, run_config, save_detector, small)

# the fixtures of tests/test_detection_distill.py: the coco128 images, a small Faster R-CNN teacher checkpoint, the
# packed training items
coco128, teacher_checkpoint, train_items = base.coco128, base.teacher_checkpoint, base.train_items

CASCADE = 'mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'
STAGES = 3
#: The small Cascade R-CNN: ResNet-18 without pretrained weights, 128 sampled RoIs per image in each stage (its
#: ``train_cfg.rcnn`` is a list, one per stage: merged by index).
CASCADE_SMALL = dict(backbone=SMALL['backbone'], neck=SMALL['neck'],
                     train_cfg=dict(rcnn={str(stage): dict(sampler=dict(num=128)) for stage in range(STAGES)}))
NKD_CASCADE = DETECTION / 'nkd_cascade-rcnn_r101_r50_fpn_12e_coco128.py'
NORMKD_CASCADE = DETECTION / 'normkd_cascade-rcnn_r101_r50_fpn_12e_coco128.py'
EMA_FASTER = DETECTION / 'ema-l2_faster-rcnn_r50_fpn_12e_coco128.py'
LETKD_FASTER = DETECTION / 'letkd-1_faster-rcnn_r101_r50_fpn_12e_coco128.py'

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py: tiny CPU tensors, one thread


def small_cascade(**extra) -> dict:
    return dict(copy.deepcopy(CASCADE_SMALL), cfg_path=CASCADE, **extra)


@pytest.fixture(scope='module')
def cascade_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised small Cascade R-CNN teacher, saved as a training run would."""
    return save_detector(small_cascade(), tmp_path_factory.mktemp('cascade_teacher') / 'teacher.pth')


def build_cascade_distiller(checkpoint: str, **task):
    from kdplug.registry import MODELS
    torch.manual_seed(1)
    return MODELS.build(distiller_cfg(small_cascade(), small_cascade(), checkpoint,
                                      dict(nkd=dict(type='NKDLoss', temperature=1.0)), **task))


@pytest.fixture(scope='module')
def cascade_distiller(cascade_checkpoint):
    return build_cascade_distiller(cascade_checkpoint).train()


def recording_losses(model, monkeypatch) -> list:
    """Record the loss dict (detached) of every training step of ``model``."""
    steps = []
    original = model.loss

    def loss(inputs, data_samples):
        losses = original(inputs, data_samples)
        steps.append({key: value.detach().clone() if isinstance(value, torch.Tensor) else value
                      for key, value in losses.items()})
        return losses

    monkeypatch.setattr(model, 'loss', loss)
    return steps


# -- Cascade R-CNN ------------------------------------------------------------------------------------------------
def test_cascade_teacher_scores_each_stages_rois_with_that_stages_box_head(cascade_distiller, train_items,
                                                                         monkeypatch):
    distiller = cascade_distiller
    student, teacher = distiller.student, distiller.teacher_model
    seen = {'student': [], 'teacher': []}

    def recorder(name, forward):
        def wrapped(stage, x, rois):
            results = forward(stage, x, rois)
            seen[name].append((stage, rois.clone(), results['cls_score'].detach().clone()))
            return results
        return wrapped

    def no_rpn(*args, **kwargs):
        raise AssertionError('the teacher\'s RPN ran: it must never choose the student\'s RoIs')

    for name, model in (('student', student), ('teacher', teacher)):
        monkeypatch.setattr(model.roi_head, '_bbox_forward', recorder(name, model.roi_head._bbox_forward))
    monkeypatch.setattr(teacher.rpn_head, 'forward', no_rpn)
    calls = recording_distill_losses(distiller, monkeypatch)
    data = preprocess(distiller, [train_items[9], train_items[25]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    monkeypatch.undo()

    # the student's training forward: one _bbox_forward per stage, on that stage's sampled RoIs; the teacher: the
    # same RoIs, stage by stage, through the same stage of its RoI head
    assert [stage for stage, _, _ in seen['student']] == [stage for stage, _, _ in seen['teacher']] == [0, 1, 2]
    assert [call['key'] for call in calls] == ['s0.', 's1.', 's2.']
    assert [call['scale'] for call in calls] == list(student.roi_head.stage_loss_weights) == [1, 0.5, 0.25]
    with torch.no_grad():
        feats = teacher.extract_feat(data['inputs'])
        for (stage, rois, _), (_, teacher_rois, teacher_logits), call in zip(seen['student'], seen['teacher'],
                                                                               calls):
            assert torch.equal(rois, teacher_rois)
            assert call['student'].shape == call['teacher'].shape == (len(rois), NUM_CLASSES + 1)
            assert call['student'].requires_grad and not call['teacher'].requires_grad
            torch.testing.assert_close(call['teacher'], teacher_logits)
            torch.testing.assert_close(teacher.roi_head._bbox_forward(stage, feats, rois)['cls_score'], call['teacher'])
            for other in set(range(STAGES)) - {stage}:  # another stage's box head scores these RoIs otherwise
                other_logits = teacher.roi_head._bbox_forward(other, feats, rois)['cls_score']
                assert not torch.allclose(other_logits, call['teacher'])
    # later stages see the boxes the previous stage refined, not the RPN's proposals again
    assert not torch.equal(seen['student'][0][1], seen['student'][1][1])
    assert float(losses['distill.num_rois']) == sum(len(rois) for _, rois, _ in seen['student'])
    assert all(finite(value) for value in losses.values())


def test_stage_weights_option_and_pairs_with_other_stage_counts(cascade_distiller, cascade_checkpoint,
                                                                 teacher_checkpoint, train_items, monkeypatch):
    from kdplug.registry import MODELS
    from kdplug.tasks.detection import TwoStageDetectionTask
    distiller = cascade_distiller
    monkeypatch.setattr(distiller.task, 'stage_weights', [2.0, 1.0, 0.0])
    calls = recording_distill_losses(distiller, monkeypatch)
    data = preprocess(distiller, [train_items[9]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    assert [call['scale'] for call in calls] == [2.0, 1.0]  # a stage of weight 0 is not distilled at all
    assert 'distill.s2.loss_nkd' not in losses
    with torch.no_grad():
        unscaled = distiller.losses['nkd'](calls[0]['student'], calls[0]['teacher'], calls[0]['target'])
    torch.testing.assert_close(losses['distill.s0.loss_nkd'].detach(), 2.0 * unscaled)
    monkeypatch.undo()

    for weights in ([1.0, -0.5, 0.25], []):
        with pytest.raises(ValueError, match='stage_weights='):
            TwoStageDetectionTask(stage_weights=weights)
    for weights in (1, '1,0.5', [1.0, 'a'], [True, 1.0]):  # from --cfg-options: Python's words, or True as 1.0
        with pytest.raises(TypeError, match=r'stage_weights=.*: give a list of numbers, one weight per RoI-head'):
            TwoStageDetectionTask(stage_weights=weights)
    with pytest.raises(ValueError, match='stage_weights has 2 weights, the student\'s RoI head 3 stages'):
        build_cascade_distiller(cascade_checkpoint, stage_weights=[1.0, 0.5])
    # a Faster R-CNN teacher for a Cascade R-CNN student (and the other way round): stage i needs a stage i
    for student_cfg, teacher_cfg in ((small_cascade(), small()), (small(), small_cascade())):
        with pytest.raises(ValueError, match=r'the student\'s RoI head has \d stage\(s\), the teacher\'s \d'):
            MODELS.build(distiller_cfg(student_cfg, teacher_cfg, teacher_checkpoint, dict(kd=dict(type='KDLoss'))))


def test_a_cascade_teacher_with_other_classes_in_one_stage_is_refused_at_build(tmp_path, teacher_checkpoint):
    """The task compared the last stage's classes only: a teacher whose first stage predicts 20 classes built, and
    its first step failed on the logits' shapes. A classifier given as a detector's teacher is named as such."""
    from kdplug.registry import MODELS
    other = small_cascade(roi_head=dict(bbox_head={'0': dict(num_classes=20)}))
    checkpoint = save_detector(other, tmp_path / 'teacher_20.pth')
    with pytest.raises(ValueError, match=f'stage 0 of the RoI head predicts 20 classes in the teacher and '
                                         f'{NUM_CLASSES} in the student'):
        MODELS.build(distiller_cfg(small_cascade(), other, checkpoint, dict(kd=dict(type='KDLoss'))))
    classifier = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
                      head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=512))
    with pytest.raises(ValueError, match="the teacher cannot be built: ImageClassifier is not in the mmdet::model "
                                         "registry. TwoStageDetectionTask builds its models in the 'mmdet' scope"):
        MODELS.build(distiller_cfg(small(), classifier, teacher_checkpoint, dict(kd=dict(type='KDLoss'))))


@pytest.mark.parametrize('config, name', [(NKD_CASCADE, 'nkd'), (NORMKD_CASCADE, 'normkd')],
                         ids=['nkd', 'normkd'])
def test_cascade_runner_steps_distil_every_stage_weighted_by_its_stage_weight(coco128, tmp_path, cascade_checkpoint,
                                                                              monkeypatch, config, name):
    cfg = run_config(coco128, tmp_path, cascade_checkpoint, config=config, validate=False, small=CASCADE_SMALL)
    runner = make_runner(cfg)
    model = runner.model
    assert type(model.student).__name__ == type(model.teacher_model).__name__ == 'CascadeRCNN'
    weights = list(model.student.roi_head.stage_loss_weights)
    assert weights == [1, 0.5, 0.25]
    steps = recording_losses(model, monkeypatch)
    calls = recording_distill_losses(model, monkeypatch)
    runner.train()

    assert len(steps) == 2 and len(calls) == 2 * STAGES
    for step, step_calls in zip(steps, (calls[:STAGES], calls[STAGES:])):
        for stage, call in enumerate(step_calls):
            key = f'distill.s{stage}.loss_{name}'
            assert call['key'] == f's{stage}.' and call['scale'] == weights[stage]
            assert finite(step[key]) and float(step[key]) > 0
            with torch.no_grad():  # the logged loss is the stage weight times the loss of that stage's rows
                unscaled = model.losses[name](call['student'], call['teacher'], call['target'])
            torch.testing.assert_close(step[key], weights[stage] * unscaled)
        assert f'distill.loss_{name}' not in step and float(step['distill.num_rois']) > 0
        own = {'student.loss_rpn_cls', 'student.loss_rpn_bbox'} | {
            f'student.s{stage}.{key}' for stage in range(STAGES) for key in ('loss_cls', 'loss_bbox', 'acc')}
        assert own <= set(step), sorted(own - set(step))
        assert all(finite(value) for value in step.values())

    train = [r for r in scalars(tmp_path) if f'distill.s0.loss_{name}' in r]
    assert len(train) == 2
    for record in train:
        assert all(f'distill.s{stage}.loss_{name}' in record for stage in range(STAGES))
        parts = sum(v for k, v in record.items() if 'loss' in k and k != 'loss')
        assert abs(record['loss'] - parts) < 1e-3
    check_export_loads_in_plain_mmdet(tmp_path / 'iter_2.pth', tmp_path / 'student.pth', model.student,
                                      cfg_path=CASCADE, **CASCADE_SMALL)


# -- the EMA self-teacher ------------------------------------------------------------------------------------------
def test_ema_teacher_on_faster_rcnn_moves_after_each_step_is_saved_and_the_export_loads(coco128, tmp_path,
                                                                                         monkeypatch):
    from kdplug.engine.checkpoint import load_checkpoint_file
    cfg = run_config(coco128, tmp_path, config=EMA_FASTER, validate=False)
    assert [hook.type for hook in cfg.custom_hooks] == ['kdplug.EMATeacherHook']
    runner = make_runner(cfg)
    model = runner.model
    source = model.teacher
    xi = source.xi
    assert type(source).__name__ == 'EMATeacher' and xi == 0.99 and model.teacher_model is source.ema
    updates = []
    update = source.update

    def recorded_update(student):
        before = {k: v.detach().clone() for k, v in source.ema.named_parameters()}
        current = {k: v.detach().clone() for k, v in student.named_parameters()}
        started = bool(source.started)
        update(student)
        updates.append((started, before, current, {k: v.detach().clone() for k, v in source.ema.named_parameters()}))

    monkeypatch.setattr(source, 'update', recorded_update)
    steps = recording_losses(model, monkeypatch)
    runner.train()

    # the first step copies the student; the hook then averages after each optimizer step
    assert [started for started, *_ in updates] == [False, True, True]
    _, _, current, after = updates[0]
    assert all(torch.equal(after[k], current[k]) for k in after)
    for _, before, current, after in updates[1:]:
        for key in after:
            torch.testing.assert_close(after[key], xi * before[key] + (1 - xi) * current[key])
        assert [k for k in after if not torch.equal(after[k], before[k])], 'the EMA teacher did not move'
    assert not source.ema.training and all(not p.requires_grad for p in source.ema.parameters())
    assert not {id(p) for p in source.ema.parameters()} & {id(p) for p in model.student.parameters()}
    assert all(p.grad is None for p in source.ema.parameters()), 'the EMA teacher took gradients'
    for step in steps:
        assert finite(step['distill.loss_kd']) and float(step['distill.num_rois']) > 0
        assert {'student.loss_cls', 'student.loss_bbox', 'student.loss_rpn_cls'} <= set(step)

    # the average is part of the run's checkpoint (a resumed run continues it); the export drops it
    saved = load_checkpoint_file(str(tmp_path / 'iter_2.pth'), role='distillation run')['state_dict']
    ema_keys = {k[len('teacher.ema.'):] for k in saved if k.startswith('teacher.ema.')}
    assert ema_keys == set(source.ema.state_dict()) and bool(saved['teacher.started'])
    for key, value in source.ema.state_dict().items():
        assert torch.equal(saved[f'teacher.ema.{key}'], value), key
    check_export_loads_in_plain_mmdet(tmp_path / 'iter_2.pth', tmp_path / 'student.pth', model.student)


# -- letKD ----------------------------------------------------------------------------------------------------------
def test_letkd_layer_in_a_faster_rcnn_backbone_trains_and_is_exported(coco128, tmp_path, teacher_checkpoint,
                                                                      monkeypatch):
    from kdplug.engine.checkpoint import load_checkpoint_file
    from kdplug.letkd.fitting import fit_codewords
    from kdplug.letkd.io import load_codewords_file
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.models.student_modules import BackboneWithModules, student_modules
    from kdplug.tools.fit_codewords import write_files
    num_codewords = 16
    codewords = tmp_path / 'codewords.pth'
    small_letkd = {k: v for k, v in overrides().items() if k != 'backbone'}
    cfg = run_config(coco128, tmp_path, teacher_checkpoint, config=LETKD_FASTER, validate=False, small=small_letkd)
    # the config's KD layer and position, in a ResNet-18 (512 channels at layer4) and with few codewords
    backbone = cfg.model.student.backbone
    assert backbone.type == 'kdplug.BackboneWithModules' and list(backbone.modules) == ['layer4']
    backbone.backbone.update(depth=18, init_cfg=None)
    backbone.modules.layer4.update(in_channels=512, num_codewords=num_codewords)
    cfg.model.teacher.model.backbone = copy.deepcopy(SMALL['backbone'])
    loss_cfg = cfg.model.losses.letkd_penult
    assert (loss_cfg.type, loss_cfg.student_module, loss_cfg.teacher_stage) == ('LetKDPenultimateLoss', 'layer4',
                                                                            'layer4')
    loss_cfg.codewords = str(codewords)

    # the codewords, fitted as tools/fit_codewords.py fits them: k-means of the teacher's layer4 features (through
    # the detection task) at every position of the training images, test pipeline; training reads the file
    written = fit_codewords(cfg, device='cpu', iters=10)
    assert list(written) == [str(codewords)]
    write_files(written)
    section = load_codewords_file(str(codewords))['sections']['layer4']
    num_images = len(base.TRAIN_IDS)
    assert (section['level'], section['teacher_stage'], section['num_images']) == ('penultimate', 'layer4', num_images)
    # the small teacher's layer4 (ResNet-18: 512 channels, stride 32) over 256-px images padded to a multiple of 32
    assert section['codewords'].shape == (num_codewords, 512) and finite(section['codewords'])
    assert section['num_vectors'] >= num_images * 4 * 4

    runner = make_runner(cfg)
    model = runner.model
    assert isinstance(model.student.backbone, BackboneWithModules)
    layer = student_modules(model.student)['layer4']
    assert isinstance(layer, LetKDLayer)

    layer_before = {k: v.clone() for k, v in layer.state_dict().items()}
    steps = recording_losses(model, monkeypatch)
    runner.train()

    assert len(steps) == 2
    for step in steps:
        assert finite(step['distill.loss_letkd_penult']) and float(step['distill.loss_letkd_penult']) > 0
        assert {'distill.letkd_penult_agreement', 'distill.letkd_penult_entropy_teacher', 'student.loss_cls',
                'student.loss_rpn_cls'} <= set(step)
        assert not [key for key in step if key.startswith('distill.') and 'loss' in key and 'letkd' not in key]
        assert 'distill.num_rois' not in step  # no logit loss distils the RoIs: nothing to count
    train = [r for r in scalars(tmp_path) if 'distill.loss_letkd_penult' in r]
    assert len(train) == 2 and all(torch.isfinite(torch.tensor(r['distill.loss_letkd_penult'])) for r in train)
    assert [k for k, v in layer.state_dict().items() if not torch.equal(layer_before[k], v)], 'the layer never moved'

    # the letKD loss alone sends a gradient into the inserted layer and, through it, into the backbone
    monkeypatch.undo()
    model.zero_grad()
    batch = model.data_preprocessor(next(iter(runner.train_dataloader)), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    losses['distill.loss_letkd_penult'].backward()
    for param in (layer.assign.weight, layer.assign.scale,
                  model.student.backbone.backbone.layer4[-1].conv2.weight):
        assert param.grad is not None and finite(param.grad) and float(param.grad.abs().sum()) > 0
    model.zero_grad()

    # the layer is part of the student: saved with it and exported with it; codewords and teacher are not
    from kdplug.distillers.export import export_student
    exported = export_student(str(tmp_path / 'iter_2.pth'), str(tmp_path / 'student.pth'))['state_dict']
    assert {f'backbone.inserted.layer4.{k}' for k in layer.state_dict()} <= set(exported)
    assert set(exported) == set(model.student.state_dict())
    saved = load_checkpoint_file(str(tmp_path / 'iter_2.pth'), role='distillation run')['state_dict']
    assert not [k for k in saved if k.startswith(('teacher', 'losses'))]

