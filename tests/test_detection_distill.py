"""The detection distiller (``kdplug.Distiller`` with ``TwoStageDetectionTask``, Faster R-CNN) on real coco128
images: through an mmengine Runner, step by step, and the detection configs.

Small models keep it fast on CPU: ResNet-18-FPN teacher and student at 256 px, backbones without pretrained weights.
Cascade R-CNN, the EMA self-teacher and letKD on detectors: tests/test_detection_tasks.py.
"""
import copy
import functools
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from conftest import REPO, TEST_DATA, require_detection_stack
from runner_helpers import make_runner, scalars

require_detection_stack(module_level=True)  # mmdet + mmcv.ops: not in tools/install.sh's classification mode

DETECTION = REPO / 'configs' / 'detection'
KD_COCO128 = DETECTION / 'kd_faster-rcnn_r101_r50_fpn_12e_coco128.py'
FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
NUM_CLASSES = 80
SCALE = (256, 256)
NO_BOX = 250                      # a coco128 train2017 image without any box
TRAIN_IDS = (NO_BOX, 9, 25, 30)   # in this order: the Runner's first batch (2 images) holds the no-box image
VAL_IDS = (139, 285)

#: Overrides for the tests' small detectors (merged into the Faster R-CNN config of ``cfg_path``): ResNet-18 without
#: pretrained weights (no download), 128 sampled RoIs per image instead of 512 (the RoI head's cost on CPU).
SMALL = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=[64, 128, 256, 512]),
             train_cfg=dict(rcnn=dict(sampler=dict(num=128))))


def overrides(num_classes: int = NUM_CLASSES, **extra) -> dict:
    return dict(copy.deepcopy(SMALL), roi_head=dict(bbox_head=dict(num_classes=num_classes)), **extra)


def small(num_classes: int = NUM_CLASSES, **extra) -> dict:
    """A small Faster R-CNN, as a kdplug config gives it: ``cfg_path`` and overrides."""
    return dict(overrides(num_classes, **extra), cfg_path=FASTER_RCNN)


def build_detector(cfg: dict):
    """A detector of a kdplug config (``cfg_path`` and overrides), built as the distiller builds it."""
    from kdplug.tasks.detection import TwoStageDetectionTask
    return TwoStageDetectionTask().build_model(TwoStageDetectionTask.model_config(cfg), 'teacher')


def teacher_cls_scores(teacher, inputs, rois):
    """The teacher's RoI classification logits on the given RoIs: backbone, neck and RoI head, never its RPN."""
    return teacher.roi_head._bbox_forward(teacher.extract_feat(inputs), rois)['cls_score']


def save_detector(cfg: dict, path: Path, seed: int = 0) -> str:
    """A randomly initialised detector, saved as a training run would (state_dict + meta)."""
    torch.manual_seed(seed)
    model = build_detector(cfg)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {'note': 'test teacher'}}, path)
    return str(path)


def distiller_cfg(student: dict, teacher: dict, checkpoint: str, losses: dict, **task) -> dict:
    """A ``kdplug.Distiller`` config: the two-stage detection task, a checkpoint teacher and the losses."""
    return dict(type='Distiller', task=dict(type='TwoStageDetectionTask', **task), student=student,
                teacher=dict(type='CheckpointTeacher', model=teacher, checkpoint=checkpoint), losses=losses)


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py: tiny CPU tensors, one thread


@pytest.fixture(scope='session')
def coco128(tmp_path_factory) -> Path:
    """A few real coco128 images in its layout (train2017/, val2017/, annotations/), as tests/data/coco128 ships them
    (copied: nothing writes into the repository), with annotation files cut to those images; train image 250 has
    no box in COCO."""
    root = tmp_path_factory.mktemp('data') / 'coco128'
    shutil.copytree(TEST_DATA / 'coco128', root, ignore=shutil.ignore_patterns('*.md'))
    for split, ids in (('train2017', TRAIN_IDS), ('val2017', VAL_IDS)):
        subset = json.loads((root / 'annotations' / f'instances_{split}.json').read_text())
        assert [image['id'] for image in subset['images']] == list(ids), split  # the json's order: see run_config
        assert len(subset['categories']) == NUM_CLASSES
    train = json.loads((root / 'annotations' / 'instances_train2017.json').read_text())
    assert not [a for a in train['annotations'] if a['image_id'] == NO_BOX]
    return root


@pytest.fixture(scope='module')
def teacher_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised small Faster R-CNN teacher, saved as a training run would (state_dict + meta)."""
    return save_detector(small(), tmp_path_factory.mktemp('teacher') / 'teacher.pth')


def build_distiller(teacher_checkpoint: str, **task):
    from kdplug.registry import MODELS
    cfg = distiller_cfg(small(), small(), teacher_checkpoint,
                        dict(kd=dict(type='KDLoss', temperature=1.0),
                             dkd=dict(type='DKDLoss', alpha=1.0, beta=0.25, temperature=1.0)), **task)
    torch.manual_seed(1)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def distiller(teacher_checkpoint):
    return build_distiller(teacher_checkpoint).train()


def dataset_items(root: Path, split: str = 'train2017') -> dict:
    """Packed coco128 items by image id (mmdet's pipeline at 256 px, no flip)."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    cfg = dict(type='CocoDataset', data_root=str(root), ann_file=f'annotations/instances_{split}.json',
               data_prefix=dict(img=f'{split}/'), filter_cfg=dict(filter_empty_gt=False),
               pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                         dict(type='Resize', scale=SCALE, keep_ratio=True), dict(type='PackDetInputs')])
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg)
        return {dataset.get_data_info(i)['img_id']: dataset[i] for i in range(len(dataset))}


@pytest.fixture(scope='module')
def train_items(coco128) -> dict:
    """Packed coco128 training items by image id (mmdet's pipeline at 256 px, no flip)."""
    return dataset_items(coco128)


def preprocess(model, items: list) -> dict:
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(pseudo_collate(copy.deepcopy(items)), True)


def finite(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(bool(torch.isfinite(v).all()) for v in values)


def recording_distill_losses(distiller, monkeypatch) -> list:
    """Record every call of ``distiller.distill_losses`` (one per group of rows: a cascade stage) as a dict of its
    arguments; the calls still compute the losses."""
    calls = []
    original = distiller.distill_losses

    def record(student_logits, teacher_logits, target, weight=None, scale=1.0, key=''):
        calls.append(dict(student=student_logits, teacher=teacher_logits, target=target, weight=weight,
                          scale=scale, key=key))
        return original(student_logits, teacher_logits, target, weight, scale, key)

    monkeypatch.setattr(distiller, 'distill_losses', record)
    return calls


# -- through the Runner -------------------------------------------------------------------------------------------
def run_config(coco128: Path, work_dir: Path, teacher_checkpoint: str = None, config: Path = KD_COCO128,
               max_iters: int = 2, validate: bool = True, small: dict = None):
    """A coco128 distillation config on the few images, small models (the config's student and teacher networks,
    its ``cfg_path`` kept, with the keys of ``small`` replaced: default :func:`overrides`), iteration-based, a
    checkpoint at the end; validation at the end unless ``validate`` is False (then kdplug's TeacherEvalHook is
    dropped too)."""
    small = overrides() if small is None else small
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.model.student = dict(cfg.model.student, **copy.deepcopy(small))
    if cfg.model.teacher.type == 'CheckpointTeacher':
        cfg.model.teacher.model = dict(cfg.model.teacher.model, **copy.deepcopy(small))
        cfg.model.teacher.checkpoint = teacher_checkpoint
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(coco128)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].batch_size = 2
        for transform in cfg[loader].dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = SCALE
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=False)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.train_dataloader.batch_sampler = None  # keep the json's order: the first batch holds the no-box image
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = str(coco128 / 'annotations/instances_val2017.json')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
    if not validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.custom_hooks = [hook for hook in cfg.get('custom_hooks', []) if hook.type != 'kdplug.TeacherEvalHook']
    # mmdet's runtime names its visualizer 'visualizer': a second Runner of the session would get the first one's
    # instance and write its scalars into the first work dir
    cfg.visualizer.name = f'visualizer_{work_dir}'
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=max_iters, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False)
    return cfg


def check_export_loads_in_plain_mmdet(checkpoint: Path, out: Path, student, cfg_path: str = FASTER_RCNN,
                                      **model) -> None:
    """The student exported from a run's checkpoint loads strictly into the plain mmdet model of ``cfg_path`` with
    the small overrides, and equals the run's student."""
    from mmdet.registry import MODELS
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmdet.apis import init_detector
    from kdplug.distillers.export import export_student
    export_student(str(checkpoint), str(out), str(out.with_suffix('.py')))
    # the student's own config written beside it: mmdet's init_detector (DetInferencer's loader) takes the two
    detector = init_detector(str(out.with_suffix('.py')), str(out), device='cpu')
    assert type(detector).__name__ == type(student).__name__
    for key, value in student.state_dict().items():
        torch.testing.assert_close(detector.state_dict()[key], value, msg=key)
    plain_cfg = Config(dict(model=get_config(cfg_path).model))
    plain_cfg.merge_from_dict(dict(model=model or overrides()))
    with DefaultScope.overwrite_default_scope('mmdet'):
        plain = MODELS.build(plain_cfg.model)
    load_checkpoint(plain, str(out), map_location='cpu', strict=True)  # weights_only=True (torch default)
    for key, value in student.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[key], value, msg=key)


def test_runner_steps_log_student_and_distill_losses_and_export_loads_in_plain_mmdet(coco128, tmp_path,
                                                                                       teacher_checkpoint):
    runner = make_runner(run_config(coco128, tmp_path, teacher_checkpoint))
    model = runner.model
    teacher = model.teacher_model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    runner.train()

    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), 'teacher weights or BN statistics moved'
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in model.parameters()}
    assert not any(k.startswith('teacher') for k in model.state_dict())
    assert [k for k, v in model.student.state_dict().items() if not torch.equal(student_before[k], v)]
    assert runner.message_hub.get_info('teacher_metrics') is not None, 'the teacher was not evaluated'

    train = [r for r in scalars(tmp_path) if 'distill.loss_kd' in r]
    assert len(train) == 2
    keys = ('loss', 'student.loss_rpn_cls', 'student.loss_rpn_bbox', 'student.loss_cls', 'student.loss_bbox',
            'distill.loss_kd', 'distill.num_rois')
    for record in train:
        assert all(torch.isfinite(torch.tensor(record[k])) for k in keys), record
        parts = sum(v for k, v in record.items() if 'loss' in k and k != 'loss')
        assert abs(record['loss'] - parts) < 1e-3
        assert record['distill.num_rois'] > 0

    check_export_loads_in_plain_mmdet(tmp_path / 'iter_2.pth', tmp_path / 'student.pth', model.student)

    # tools/test.py --out dumps as mmdet's own tool (DumpDetResults: the predictions, no ground truth)
    from kdplug.tools.test import main as test_main
    runner.cfg.dump(str(tmp_path / 'run.py'))
    test_main([str(tmp_path / 'run.py'), str(tmp_path / 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
               '--out', str(tmp_path / 'dets.pkl')])
    dumped = pickle.loads((tmp_path / 'dets.pkl').read_bytes())
    assert len(dumped) == len(VAL_IDS) and 'pred_instances' in dumped[0]
    assert 'gt_instances' not in dumped[0] and 'ignored_instances' not in dumped[0]


# -- one step, looked at closely ----------------------------------------------------------------------------------
def test_teacher_scores_exactly_the_students_sampled_rois_and_never_runs_its_rpn(distiller, train_items,
                                                                                monkeypatch):
    seen = {}

    def recorder(name, forward):
        def wrapped(x, rois):
            seen[name] = rois.clone()
            return forward(x, rois)
        return wrapped

    def no_rpn(*args, **kwargs):
        raise AssertionError('the teacher\'s RPN ran: it must never choose the student\'s RoIs')

    teacher = distiller.teacher_model
    for name, model in (('student', distiller.student), ('teacher', teacher)):
        monkeypatch.setattr(model.roi_head, '_bbox_forward', recorder(name, model.roi_head._bbox_forward))
    monkeypatch.setattr(teacher.rpn_head, 'forward', no_rpn)
    calls = recording_distill_losses(distiller, monkeypatch)
    data = preprocess(distiller, [train_items[9], train_items[25]])
    losses = distiller.loss(data['inputs'], data['data_samples'])

    assert torch.equal(seen['student'], seen['teacher'])
    rois = seen['student']
    assert rois.shape[1] == 5 and set(rois[:, 0].long().tolist()) == {0, 1}
    n = rois.shape[0]
    assert len(calls) == 1 and calls[0]['key'] == '' and calls[0]['scale'] == 1.0  # one stage: no stage prefix
    call = calls[0]
    assert call['student'].shape == call['teacher'].shape == (n, NUM_CLASSES + 1)
    assert call['student'].requires_grad and not call['teacher'].requires_grad
    target = call['target']
    assert target.shape == (n,) and 0 < int((target < NUM_CLASSES).sum()) < n  # foreground and background rows
    assert int(target.max()) == NUM_CLASSES  # background is the last class
    assert call['weight'] is None  # 'include': a plain mean over the RoIs
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(teacher_cls_scores(teacher, data['inputs'], rois), call['teacher'])
    assert set(losses) >= {'student.loss_rpn_cls', 'student.loss_rpn_bbox', 'student.loss_cls', 'student.loss_bbox',
                           'student.acc', 'distill.loss_kd', 'distill.loss_dkd', 'distill.num_rois'}
    assert float(losses['distill.num_rois']) == n
    assert all(finite(v) for v in losses.values())


def test_the_students_own_losses_are_mmdets_unchanged(distiller, train_items):
    """The student's ``loss()`` runs as mmdet's own: same keys, same values as the detector alone (same seed: the
    RPN's and the sampler's random choices are the same), and its RoI head is left as it was."""
    head = distiller.student.roi_head
    data = preprocess(distiller, [train_items[9], train_items[25]])
    torch.manual_seed(3)
    losses = distiller.loss(data['inputs'], data['data_samples'])
    assert 'bbox_loss' not in vars(head), 'the recording of bbox_loss was left on the RoI head'
    torch.manual_seed(3)
    alone = distiller.student.loss(data['inputs'], data['data_samples'])
    own = {key[len('student.'):]: value for key, value in losses.items() if key.startswith('student.')}
    assert set(own) == set(alone)
    for key, value in alone.items():
        torch.testing.assert_close(own[key], value, msg=key)


def test_image_without_boxes_and_batches_without_foreground(distiller, train_items, monkeypatch):
    # mixed batch: the no-box image beside one with boxes
    data = preprocess(distiller, [train_items[NO_BOX], train_items[9]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    assert all(finite(v) for v in losses.values())
    # no foreground at all: 'include' distils the background RoIs, 'exclude' has nothing to distil -> 0, on the graph
    data = preprocess(distiller, [train_items[NO_BOX]])
    distiller.zero_grad()
    losses = distiller.loss(data['inputs'], data['data_samples'])
    assert all(finite(v) for v in losses.values()) and float(losses['distill.num_rois']) > 0
    monkeypatch.setattr(distiller.task, 'background', 'exclude')
    losses = distiller.loss(data['inputs'], data['data_samples'])
    assert all(finite(v) for v in losses.values())
    assert float(losses['distill.num_rois']) == 0
    for name in ('distill.loss_kd', 'distill.loss_dkd'):
        assert float(losses[name]) == 0.0 and losses[name].requires_grad
    total, _ = distiller.parse_losses(losses)
    total.backward()
    assert all(finite(p.grad) for p in distiller.student.parameters() if p.grad is not None)
    distiller.zero_grad()


def test_background_policies_weigh_the_background_rows():
    from kdplug.tasks.detection import TwoStageDetectionTask, background_weights, check_background
    labels = torch.tensor([0, 3, NUM_CLASSES, NUM_CLASSES, 79])
    assert background_weights(labels, NUM_CLASSES, 'include') is None
    assert background_weights(labels, NUM_CLASSES, 'exclude').tolist() == [1, 1, 0, 0, 1]
    assert background_weights(labels, NUM_CLASSES, 0.25).tolist() == [1, 1, 0.25, 0.25, 1]
    for bad in ('drop', 1.5, -0.1, True, None):
        with pytest.raises(ValueError, match='background='):
            check_background(bad)
        with pytest.raises(ValueError, match='background='):
            TwoStageDetectionTask(background=bad)
    assert not TwoStageDetectionTask().weighs_rows
    assert TwoStageDetectionTask(background='exclude').weighs_rows and TwoStageDetectionTask(background=0.5).weighs_rows


def test_exclude_distils_foreground_rows_only(distiller, train_items, monkeypatch):
    from kdplug.losses import KDLoss
    monkeypatch.setattr(distiller.task, 'background', 'exclude')
    calls = recording_distill_losses(distiller, monkeypatch)
    data = preprocess(distiller, [train_items[9]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    seen = calls[0]
    foreground = seen['target'] < NUM_CLASSES
    assert seen['weight'].tolist() == foreground.float().tolist()
    assert float(losses['distill.num_rois']) == int(foreground.sum()) > 0
    expected = KDLoss(temperature=1.0)(seen['student'].detach()[foreground], seen['teacher'][foreground])
    torch.testing.assert_close(losses['distill.loss_kd'].detach(), expected)


def test_a_float_background_weight_weighs_the_background_rows(distiller, train_items, monkeypatch):
    """background=w: sum(w_i l_i) / sum(w_i), background rows weighing w."""
    from kdplug.losses import KDLoss
    monkeypatch.setattr(distiller.task, 'background', 0.25)
    calls = recording_distill_losses(distiller, monkeypatch)
    data = preprocess(distiller, [train_items[9]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    seen = calls[0]
    weight = torch.where(seen['target'] < NUM_CLASSES, 1.0, 0.25)
    assert seen['weight'].tolist() == weight.tolist()
    assert float(losses['distill.num_rois']) == len(weight)
    rows = KDLoss(temperature=1.0).per_sample(seen['student'].detach().float(), seen['teacher'].float(), None)
    torch.testing.assert_close(losses['distill.loss_kd'].detach(), (weight * rows).sum() / weight.sum())


def test_mixed_precision_float16_teacher_and_bfloat16_refused(distiller, train_items):
    data = preprocess(distiller, [train_items[9]])
    rois = torch.tensor([[0, 10.0, 10.0, 120.0, 150.0], [0, 40.0, 30.0, 90.0, 200.0]])
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):  # mmcv RoIAlign has a float16 kernel
        logits = teacher_cls_scores(distiller.teacher_model, data['inputs'], rois)
    assert logits.dtype == torch.float16 and logits.shape == (2, NUM_CLASSES + 1) and finite(logits)
    student = torch.randn(2, NUM_CLASSES + 1, dtype=torch.float16, requires_grad=True)
    losses = distiller.distill_losses(student, logits, torch.tensor([3, NUM_CLASSES]))
    assert all(v.dtype == torch.float32 and finite(v) for v in losses.values())
    with torch.autocast('cpu', dtype=torch.bfloat16), pytest.raises(RuntimeError, match="dtype='float16'"):
        distiller.loss(data['inputs'], data['data_samples'])


# -- RoI heads: the student's own loss() runs, kdplug only watches bbox_loss --------------------------------------
def test_a_head_with_its_own_loss_keeps_it_and_is_distilled(distiller, train_items, monkeypatch):
    """A RoI head that overrides ``loss`` (an extra term, say) keeps its behaviour: kdplug runs the head's own
    ``loss`` and records the RoIs of its ``bbox_loss`` calls (the old distiller refused such heads)."""
    from mmdet.models.roi_heads import StandardRoIHead

    class WithExtraLoss(StandardRoIHead):
        def loss(self, x, rpn_results_list, batch_data_samples):
            losses = super().loss(x, rpn_results_list, batch_data_samples)
            losses['loss_extra'] = 0.0 * x[0].sum() + 0.125
            return losses

    monkeypatch.setattr(distiller.student.roi_head, '__class__', WithExtraLoss)
    calls = recording_distill_losses(distiller, monkeypatch)
    data = preprocess(distiller, [train_items[9]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    assert float(losses['student.loss_extra']) == 0.125
    assert len(calls) == 1 and finite(losses['distill.loss_kd'])


def test_heads_that_hide_their_rois_are_named(distiller, train_items, monkeypatch):
    """A head whose ``loss`` never calls ``bbox_loss``, or whose ``bbox_loss`` returns no ``cls_score``: kdplug
    cannot see the RoIs, and says so at the first step (no silent training without distillation)."""
    from mmdet.models.roi_heads import StandardRoIHead

    class NoBBoxLoss(StandardRoIHead):
        def loss(self, x, rpn_results_list, batch_data_samples):
            return {'loss_zero': 0.0 * x[0].sum()}

    class NoClsScore(StandardRoIHead):
        def bbox_loss(self, x, sampling_results):
            results = super().bbox_loss(x, sampling_results)
            results.pop('cls_score')
            return results

    data = preprocess(distiller, [train_items[9]])
    head = distiller.student.roi_head
    for cls, message in ((NoBBoxLoss, 'NoBBoxLoss.loss computed its losses without calling bbox_loss'),
                         (NoClsScore, 'NoClsScore.bbox_loss does not return the RoIs\' cls_score')):
        monkeypatch.setattr(head, '__class__', cls)
        with pytest.raises(NotImplementedError, match=message):
            distiller.loss(data['inputs'], data['data_samples'])
        assert 'bbox_loss' not in vars(head)
        monkeypatch.undo()


def test_detectors_without_a_box_head_are_refused(tmp_path):
    from kdplug.registry import MODELS
    rpn_only = dict(overrides(), cfg_path='mmdet::rpn/rpn_r50_fpn_1x_coco.py')
    rpn_only.pop('roi_head')
    rpn_only['train_cfg'] = dict(rpn=dict(sampler=dict(num=128)))
    with pytest.raises(TypeError, match='not a two-stage detector with a roi_head'):
        MODELS.build(distiller_cfg(rpn_only, small(), str(tmp_path / 'unused.pth'), dict(kd=dict(type='KDLoss'))))


# -- clear errors at build time -----------------------------------------------------------------------------------
def test_class_count_mismatch_is_a_clear_error(tmp_path):
    from kdplug.registry import MODELS
    cfg = distiller_cfg(small(), small(num_classes=20), str(tmp_path / 'unused.pth'), dict(kd=dict(type='KDLoss')))
    with pytest.raises(ValueError, match='the teacher predicts 20 classes and the student 80'):
        MODELS.build(cfg)


def test_teacher_with_other_image_normalisation_is_refused(tmp_path):
    from kdplug.registry import MODELS
    caffe = dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False,
                 pad_size_divisor=32)
    cfg = distiller_cfg(small(), small(data_preprocessor=caffe), str(tmp_path / 'unused.pth'),
                        dict(kd=dict(type='KDLoss')))
    with pytest.raises(ValueError, match='the teacher was configured with another image preprocessing'):
        MODELS.build(cfg)


def test_missing_and_mismatched_teacher_checkpoints(tmp_path, teacher_checkpoint):
    from kdplug.registry import MODELS
    cfg = distiller_cfg(small(), small(), str(tmp_path / 'nope.pth'), dict(kd=dict(type='KDLoss')))
    with pytest.raises(FileNotFoundError, match="nope.pth' does not exist"):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='the teacher\'s checkpoint is missing'):
        MODELS.build(distiller_cfg(small(), small(), None, dict(kd=dict(type='KDLoss'))))
    deeper = small(backbone=dict(depth=34, init_cfg=None))
    with pytest.raises(RuntimeError, match='does not fit the teacher config'):
        MODELS.build(distiller_cfg(small(), deeper, teacher_checkpoint, dict(kd=dict(type='KDLoss'))))


def test_weighted_background_policies_need_losses_that_take_row_weights(tmp_path):
    from kdplug.registry import MODELS
    from torch import nn

    class Unweighted(nn.Module):
        def forward(self, student_logits, teacher_logits, target=None):
            return (student_logits - teacher_logits).pow(2).mean()

    cfg = distiller_cfg(small(), small(), str(tmp_path / 'unused.pth'), dict(mse=dict(type=Unweighted)),
                        background='exclude')
    with pytest.raises(ValueError, match=r"the losses \['mse'\] \(Unweighted\) take no row weights"):
        MODELS.build(cfg)


# -- the configs ----------------------------------------------------------------------------------------------------
DETECTORS = ('FasterRCNN', 'CascadeRCNN')


def detection_configs() -> list:
    return sorted(p for p in DETECTION.rglob('*.py') if '_base_' not in p.parts)


@functools.lru_cache(maxsize=None)
def parsed(config: Path) -> Config:
    """Each config parsed once (``mmdet::`` bases are slow to resolve); callers copy before changing anything."""
    return Config.fromfile(str(config))


@functools.lru_cache(maxsize=None)
def resolved(model_json: str) -> dict:
    """A student / teacher entry resolved to its full mmdet config (``cfg_path`` read and the overrides merged)."""
    from kdplug.tasks.detection import TwoStageDetectionTask
    return TwoStageDetectionTask.model_config(json.loads(model_json))


def box_classes(model: dict) -> set:
    heads = model['roi_head']['bbox_head']
    return {head['num_classes'] for head in (heads if isinstance(heads, list) else [heads])}


@pytest.mark.parametrize('config', detection_configs(), ids=lambda p: str(p.relative_to(DETECTION)))
def test_every_detection_config_parses_and_its_parts_build(config):
    from kdplug.models.student_modules import BackboneWithModules
    from kdplug.registry import MODELS, TASKS, TEACHERS
    cfg = parsed(config)
    assert cfg.default_scope == 'mmdet'
    assert cfg.train_dataloader.dataset.data_root in ('data/coco/', 'data/coco128/')
    # the random state in every checkpoint, as the classification runtime (a resume draws the same augmentations)
    assert cfg.default_hooks.random_state.type == 'kdplug.RandomStateHook'
    if cfg.model.type != 'kdplug.Distiller':  # a plain mmdet teacher / student config
        assert cfg.model.type in DETECTORS and box_classes(cfg.model) == {NUM_CLASSES}
        return
    task = TASKS.build(cfg.model.task)
    assert type(task).__name__ == 'TwoStageDetectionTask'
    # a teacher checkpoint of other classes or another class order is refused before training (it trained)
    assert cfg.default_hooks.teacher_data.type == 'kdplug.TeacherDataCheckHook'
    student = resolved(json.dumps(cfg.model.student.to_dict(), sort_keys=True))
    assert student['type'] in DETECTORS and box_classes(student) == {NUM_CLASSES}
    teacher = cfg.model.teacher
    TEACHERS.build(teacher)  # the source's options (an EMATeacher with a CheckpointTeacher's leftovers fails here)
    hooks = [hook.type for hook in cfg.get('custom_hooks', [])]
    if teacher.type == 'CheckpointTeacher':
        model = resolved(json.dumps(teacher.model.to_dict(), sort_keys=True))
        assert model['type'] == student['type'] and box_classes(model) == {NUM_CLASSES}
        assert teacher.checkpoint and 'kdplug.TeacherEvalHook' in hooks
    else:
        assert teacher.type == 'EMATeacher' and hooks == ['kdplug.EMATeacherHook']
    for name, loss in cfg.model.losses.items():
        built = MODELS.build(loss)
        if hasattr(built, 'student_module'):  # letKD: its layer is in the student's backbone, its codewords named
            backbone = student['backbone']
            assert MODELS.get(backbone['type']) is BackboneWithModules
            assert built.student_module in backbone['modules'] and built.codewords_path == cfg.codewords
            assert 'loss' not in name


def test_one_distillation_config_per_model_pair_builds_in_full(tmp_path):
    """The distillation configs differ from the others of their model pair only in ``losses``: build one per pair
    with the real networks (a random teacher checkpoint stands in for the trained / released one)."""
    from mmengine.registry import DefaultScope, MODELS as ROOT
    pairs = {}
    for config in detection_configs():
        cfg = parsed(config)
        if cfg.model.type == 'kdplug.Distiller':
            model = cfg.model.to_dict()
            model.pop('losses')
            model['teacher'].pop('checkpoint', None)  # the COCO and coco128 runs of a pair build the same networks
            pairs.setdefault(json.dumps(model, sort_keys=True), cfg)
    # Faster R-CNN R-101 -> R-50, Cascade R-CNN R-101 -> R-50, EMA R-50, letKD R-101 -> R-50 (+ KD layer)
    assert len(pairs) == 4
    checkpoints = {}
    for cfg in pairs.values():
        model_cfg = copy.deepcopy(cfg.model)
        if model_cfg.teacher.type == 'CheckpointTeacher':
            key = json.dumps(model_cfg.teacher.model.to_dict(), sort_keys=True)
            if key not in checkpoints:
                checkpoints[key] = tmp_path / f'teacher{len(checkpoints)}.pth'
                torch.save(build_detector(model_cfg.teacher.model).state_dict(), checkpoints[key])
            model_cfg.teacher.checkpoint = str(checkpoints[key])
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = ROOT.build(model_cfg)
        assert type(model).__name__ == 'Distiller' and type(model.task).__name__ == 'TwoStageDetectionTask'
        student_backbone = getattr(model.student.backbone, 'backbone', model.student.backbone)
        assert student_backbone.depth == 50 and model.task.num_classes(model.student) == NUM_CLASSES
        teacher = model.teacher_model
        assert type(teacher) is type(model.student)
        assert getattr(teacher.backbone, 'depth', None) == (50 if cfg.model.teacher.type == 'EMATeacher' else 101)
    assert len(checkpoints) == 2


def test_the_detection_configs_training_pipeline_names_an_image_it_cannot_decode(coco128, tmp_path):
    """coco128's training pipeline loads with kdplug.CheckedLoadImageFromFile: the same packed items as mmdet's
    LoadImageFromFile on good images, and an empty image file (OpenCV: "!buf.empty()", no file name) is named."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    pipeline = copy.deepcopy(parsed(DETECTION / '_base_' / 'coco128_detection.py').train_pipeline)
    assert pipeline[0]['type'] == 'kdplug.CheckedLoadImageFromFile'
    pipeline = [step for step in pipeline if step['type'] != 'RandomFlip']  # the same items twice

    def dataset(root: Path, steps: list):
        cfg = dict(type='CocoDataset', data_root=str(root), ann_file='annotations/instances_train2017.json',
                   data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=False), pipeline=steps)
        with DefaultScope.overwrite_default_scope('mmdet'):
            return DATASETS.build(cfg)

    checked, plain = dataset(coco128, pipeline), dataset(coco128, [dict(type='LoadImageFromFile')] + pipeline[1:])
    ours, theirs = checked[1], plain[1]
    assert torch.equal(ours['inputs'], theirs['inputs'])
    boxes = [item['data_samples'].gt_instances.bboxes.tensor for item in (ours, theirs)]
    assert torch.equal(*boxes)
    damaged = tmp_path / 'coco128'
    shutil.copytree(coco128, damaged)
    path = Path(checked.get_data_info(1)['img_path'].replace(str(coco128), str(damaged)))
    path.write_bytes(b'')
    with pytest.raises(ValueError, match=re.escape(str(path)) + r' cannot be decoded .*empty, damaged or not an image'):
        dataset(damaged, pipeline)[1]


def test_the_tools_load_every_pipelines_images_with_the_checked_loader(coco128, tmp_path):
    """mmdet's test pipeline names LoadImageFromFile (DetInferencer looks for it), whose empty-file error is OpenCV's
    "!buf.empty()" without the file: kdplug's tools run every dataloader's mmcv loader as the checked one (wrapped
    datasets too), and the student's exported config names mmcv's loader again."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope

    from kdplug.distillers.export import student_config
    from kdplug.tools.train import merge_args, parse_args
    from kdplug.transforms.checked_load import dataloader_pipelines
    cfg = Config.fromfile(str(KD_COCO128))
    assert cfg.test_dataloader.dataset.pipeline[0].type == 'LoadImageFromFile'
    wrapped = copy.deepcopy(cfg.train_dataloader.dataset)
    wrapped.pipeline[0] = dict(type='mmcv.LoadImageFromFile', to_float32=True)
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[dict(type='RepeatDataset', times=2,
                                                                             dataset=wrapped)])
    cfg = merge_args(cfg, parse_args([str(KD_COCO128), '--cfg-options', f'work_dir={tmp_path}']))
    loaders = [pipeline[0] for pipeline in dataloader_pipelines(cfg)]
    assert len(loaders) == 3 and all(loader['type'] == 'kdplug.CheckedLoadImageFromFile' for loader in loaders)
    assert loaders[0]['to_float32'] is True  # the loader's options kept
    assert [t.type for t in cfg.val_dataloader.dataset.pipeline[1:]] == ['Resize', 'LoadAnnotations', 'PackDetInputs']

    damaged = tmp_path / 'coco128'
    shutil.copytree(coco128, damaged)
    val = dict(copy.deepcopy(cfg.val_dataloader.dataset), data_root=str(damaged))
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(val)
    path = Path(dataset.get_data_info(0)['img_path'])
    path.write_bytes(b'')
    with pytest.raises(ValueError, match=re.escape(str(path)) + r' cannot be decoded .*empty, damaged or not an image'):
        dataset[0]

    exported = student_config(cfg)
    assert exported.test_dataloader.dataset.pipeline[0].type == 'LoadImageFromFile'
    assert [pipeline[0]['type'] for pipeline in dataloader_pipelines(exported)] == ['LoadImageFromFile'] * 3


def test_tta_without_a_tta_model_takes_mmdets_default():
    """--tta on a detection config without tta_model was refused; mmdet's own test.py merges each image's and its
    flip's detections (DetTTAModel, NMS at IoU 0.5), the flip recorded in each view's meta keys."""
    from kdplug.tools.test import with_test_time_augmentation
    cfg = copy.deepcopy(parsed(DETECTION / 'students' / 'faster-rcnn_r50_fpn_12e_coco128.py'))
    assert 'tta_model' not in cfg
    with_test_time_augmentation(cfg, pytest.fail)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.type == 'FasterRCNN'
    assert cfg.model.tta_cfg == dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    last = cfg.test_dataloader.dataset.pipeline[-1]
    assert last.type == 'TestTimeAug' and [t['prob'] for t in last.transforms[0]] == [1.0, 0.0]
    assert {'flip', 'flip_direction'} <= set(last.transforms[1][0]['meta_keys'])
    from mmdet.registry import MODELS
    assert MODELS.get(cfg.model.type) is not None  # found from mmdet's scope (mmdet registers it in mmengine's)


def test_a_dataset_the_student_cannot_train_on_is_refused_before_the_first_step(coco128):
    """COCO's 80 classes for a 20-class box head: torch's "Target 45 is out of bounds" at some step; a Mask R-CNN
    student on a pipeline without masks: mmdet's "'InstanceData' object has no attribute 'masks'"."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope

    from kdplug.tasks.detection import TwoStageDetectionTask

    def dataset(with_mask: bool):
        cfg = dict(type='CocoDataset', data_root=str(coco128), ann_file='annotations/instances_train2017.json',
                   data_prefix=dict(img='train2017/'),
                   pipeline=[dict(type='LoadImageFromFile'),
                             dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask)])
        with DefaultScope.overwrite_default_scope('mmdet'):
            return DATASETS.build(cfg)

    task = TwoStageDetectionTask()
    task.check_dataset(dataset(False), build_detector(small()))
    with pytest.raises(ValueError, match=r"the training dataset has 80 classes \('person', 'bicycle', 'car', \.\.\.\),"
                                         r" the student's box head 20: .*roi_head.bbox_head.num_classes=80"):
        task.check_dataset(dataset(False), build_detector(small(num_classes=20)))
    mask_rcnn = dict(overrides(), cfg_path='mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    with pytest.raises(ValueError, match=r"mask head \(Mask R-CNN\), and the training pipeline loads no masks: use "
                                         r"dict\(type='LoadAnnotations', with_bbox=True, with_mask=True\)"):
        task.check_dataset(dataset(False), build_detector(mask_rcnn))
    task.check_dataset(dataset(True), build_detector(mask_rcnn))


def test_amp_without_a_gpu_is_refused_for_detection_tests(tmp_path, capsys):
    """mmengine's CPU autocast is bfloat16: mmcv's NMS failed with "expected scalar type Float but found BFloat16"."""
    from kdplug.tools.test import main as test_main
    if torch.cuda.is_available():
        pytest.skip('a GPU tests in float16')
    checkpoint = tmp_path / 'x.pth'
    torch.save({'state_dict': {}}, checkpoint)
    with pytest.raises(SystemExit):
        test_main([str(DETECTION / 'students' / 'faster-rcnn_r50_fpn_12e_coco128.py'), str(checkpoint), '--amp'])
    said = capsys.readouterr().err
    assert "--amp without a GPU tests in bfloat16 (mmengine's CPU autocast), which mmcv's NMS" in said
