"""The mmdet RoI-head distiller (Faster R-CNN) on real coco128 images: through an mmengine Runner, step by step, and
the detection configs.

Small models keep it fast on CPU: ResNet-18-FPN teacher and student at 256 px, backbones without pretrained weights.
"""
import copy
import functools
import json
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
def teacher_ckpt(tmp_path_factory) -> str:
    """A randomly initialised small teacher, saved as a training run would (state_dict + meta)."""
    from kdplug.adapters.mmdet import build_detector
    torch.manual_seed(0)
    teacher = build_detector(small())
    teacher.init_weights()
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {'note': 'test teacher'}}, path)
    return str(path)


def build_distiller(teacher_ckpt: str, **overrides):
    from kdplug.registry import MODELS
    cfg = dict(type='RoIHeadDistiller', student=small(), teacher=small(), teacher_ckpt=teacher_ckpt,
               losses=dict(kd=dict(type='KDLoss', temperature=1.0),
                           dkd=dict(type='DKDLoss', alpha=1.0, beta=0.25, temperature=1.0)))
    cfg.update(overrides)
    torch.manual_seed(1)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def distiller(teacher_ckpt):
    return build_distiller(teacher_ckpt).train()


@pytest.fixture(scope='module')
def train_items(coco128) -> dict:
    """Packed coco128 training items by image id (mmdet's pipeline at 256 px, no flip)."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    cfg = dict(type='CocoDataset', data_root=str(coco128), ann_file='annotations/instances_train2017.json',
               data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=False),
               pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                         dict(type='Resize', scale=SCALE, keep_ratio=True), dict(type='PackDetInputs')])
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg)
        return {dataset.get_data_info(i)['img_id']: dataset[i] for i in range(len(dataset))}


def preprocess(model, items: list) -> dict:
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(pseudo_collate(copy.deepcopy(items)), True)


def finite(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(bool(torch.isfinite(v).all()) for v in values)


# -- through the Runner -------------------------------------------------------------------------------------------
def run_config(coco128: Path, work_dir: Path, teacher_ckpt: str, config: Path = KD_COCO128, max_iters: int = 2):
    """A coco128 distillation config on the few images, small models, iteration-based, a checkpoint at the end."""
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.model.student = dict(cfg.model.student, **overrides())  # keeps the config's cfg_path
    cfg.model.teacher = dict(cfg.model.teacher, **overrides())
    cfg.model.teacher_ckpt = teacher_ckpt
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
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=max_iters, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False)
    return cfg


def test_runner_steps_log_student_and_distill_losses_and_export_loads_in_plain_mmdet(coco128, tmp_path,
                                                                                       teacher_ckpt):
    from mmdet.registry import MODELS
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from kdplug.distillers.export import export_student
    runner = make_runner(run_config(coco128, tmp_path, teacher_ckpt))
    model = runner.model
    teacher = model.teacher
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

    exported = tmp_path / 'student.pth'
    export_student(str(tmp_path / 'iter_2.pth'), str(exported))
    plain_cfg = Config(dict(model=get_config(FASTER_RCNN).model))
    plain_cfg.merge_from_dict(dict(model=overrides()))
    with DefaultScope.overwrite_default_scope('mmdet'):
        plain = MODELS.build(plain_cfg.model)
    load_checkpoint(plain, str(exported), map_location='cpu', strict=True)  # weights_only=True (torch default)
    for key, value in model.student.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[key], value, msg=key)


# -- one step, looked at closely ----------------------------------------------------------------------------------
def test_teacher_scores_exactly_the_students_sampled_rois_and_never_runs_its_rpn(distiller, train_items,
                                                                                monkeypatch):
    from kdplug.adapters.mmdet import teacher_cls_scores
    seen = {}

    def recorder(name, forward):
        def wrapped(x, rois):
            seen[name] = rois.clone()
            return forward(x, rois)
        return wrapped

    def no_rpn(*args, **kwargs):
        raise AssertionError('the teacher\'s RPN ran: it must never choose the student\'s RoIs')

    def record_losses(student_logits, teacher_logits, target, weight=None):
        seen.update(student_logits=student_logits, teacher_logits=teacher_logits, target=target, weight=weight)
        return distill_losses(student_logits, teacher_logits, target, weight=weight)

    for name, model in (('student', distiller.student), ('teacher', distiller.teacher)):
        monkeypatch.setattr(model.roi_head, '_bbox_forward', recorder(name, model.roi_head._bbox_forward))
    monkeypatch.setattr(distiller.teacher.rpn_head, 'forward', no_rpn)
    distill_losses = distiller.distill_losses
    monkeypatch.setattr(distiller, 'distill_losses', record_losses)
    data = preprocess(distiller, [train_items[9], train_items[25]])
    losses = distiller.loss(data['inputs'], data['data_samples'])

    assert torch.equal(seen['student'], seen['teacher'])
    rois = seen['student']
    assert rois.shape[1] == 5 and set(rois[:, 0].long().tolist()) == {0, 1}
    n = rois.shape[0]
    assert seen['student_logits'].shape == seen['teacher_logits'].shape == (n, NUM_CLASSES + 1)
    assert seen['student_logits'].requires_grad and not seen['teacher_logits'].requires_grad
    target = seen['target']
    assert target.shape == (n,) and 0 < int((target < NUM_CLASSES).sum()) < n  # foreground and background rows
    assert int(target.max()) == NUM_CLASSES  # background is the last class
    assert seen['weight'] is None  # 'include': a plain mean over the RoIs
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(teacher_cls_scores(distiller.teacher, data['inputs'], rois),
                                   seen['teacher_logits'])
    assert set(losses) >= {'student.loss_rpn_cls', 'student.loss_rpn_bbox', 'student.loss_cls', 'student.loss_bbox',
                           'student.acc', 'distill.loss_kd', 'distill.loss_dkd', 'distill.num_rois'}
    assert float(losses['distill.num_rois']) == n
    assert all(finite(v) for v in losses.values())


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
    monkeypatch.setattr(distiller, 'background', 'exclude')
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
    from kdplug.distillers.roi_distiller import background_weights, check_background
    labels = torch.tensor([0, 3, NUM_CLASSES, NUM_CLASSES, 79])
    assert background_weights(labels, NUM_CLASSES, 'include') is None
    assert background_weights(labels, NUM_CLASSES, 'exclude').tolist() == [1, 1, 0, 0, 1]
    assert background_weights(labels, NUM_CLASSES, 0.25).tolist() == [1, 1, 0.25, 0.25, 1]
    for bad in ('drop', 1.5, -0.1, True, None):
        with pytest.raises(ValueError, match='background='):
            check_background(bad)


def test_exclude_distils_foreground_rows_only(distiller, train_items, monkeypatch):
    from kdplug.losses import KDLoss
    seen = {}
    distill_losses = distiller.distill_losses

    def record_losses(student_logits, teacher_logits, target, weight=None):
        seen.update(student=student_logits.detach(), teacher=teacher_logits, target=target, weight=weight)
        return distill_losses(student_logits, teacher_logits, target, weight=weight)

    monkeypatch.setattr(distiller, 'background', 'exclude')
    monkeypatch.setattr(distiller, 'distill_losses', record_losses)
    data = preprocess(distiller, [train_items[9]])
    losses = distiller.loss(data['inputs'], data['data_samples'])
    foreground = seen['target'] < NUM_CLASSES
    assert seen['weight'].tolist() == foreground.float().tolist()
    assert float(losses['distill.num_rois']) == int(foreground.sum()) > 0
    expected = KDLoss(temperature=1.0)(seen['student'][foreground], seen['teacher'][foreground])
    torch.testing.assert_close(losses['distill.loss_kd'].detach(), expected)


def test_mixed_precision_float16_teacher_and_bfloat16_refused(distiller, train_items):
    from kdplug.adapters.mmdet import teacher_cls_scores
    data = preprocess(distiller, [train_items[9]])
    rois = torch.tensor([[0, 10.0, 10.0, 120.0, 150.0], [0, 40.0, 30.0, 90.0, 200.0]])
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):  # mmcv RoIAlign has a float16 kernel
        logits = teacher_cls_scores(distiller.teacher, data['inputs'], rois)
    assert logits.dtype == torch.float16 and logits.shape == (2, NUM_CLASSES + 1) and finite(logits)
    student = torch.randn(2, NUM_CLASSES + 1, dtype=torch.float16, requires_grad=True)
    losses = distiller.distill_losses(student, logits, torch.tensor([3, NUM_CLASSES]))
    assert all(v.dtype == torch.float32 and finite(v) for v in losses.values())
    with torch.autocast('cpu', dtype=torch.bfloat16), pytest.raises(RuntimeError, match="dtype='float16'"):
        distiller.loss(data['inputs'], data['data_samples'])


# -- clear errors at build time -----------------------------------------------------------------------------------
def test_class_count_mismatch_is_a_clear_error(tmp_path):
    from kdplug.registry import MODELS
    cfg = dict(type='RoIHeadDistiller', student=small(), teacher=small(num_classes=20),
               teacher_ckpt=str(tmp_path / 'unused.pth'), losses=dict(kd=dict(type='KDLoss')))
    with pytest.raises(ValueError, match='the teacher predicts 20 classes and the student 80'):
        MODELS.build(cfg)


def test_teacher_with_other_image_normalisation_is_refused(tmp_path):
    from kdplug.registry import MODELS
    caffe = dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False,
                 pad_size_divisor=32)
    cfg = dict(type='RoIHeadDistiller', student=small(), teacher=small(data_preprocessor=caffe),
               teacher_ckpt=str(tmp_path / 'unused.pth'), losses=dict(kd=dict(type='KDLoss')))
    with pytest.raises(ValueError, match='the teacher was configured with another image preprocessing'):
        MODELS.build(cfg)


def test_missing_and_mismatched_teacher_checkpoints(tmp_path, teacher_ckpt):
    from kdplug.registry import MODELS
    cfg = dict(type='RoIHeadDistiller', student=small(), teacher=small(), teacher_ckpt=str(tmp_path / 'nope.pth'),
               losses=dict(kd=dict(type='KDLoss')))
    with pytest.raises(FileNotFoundError, match="nope.pth' does not exist"):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='teacher_ckpt is missing'):
        MODELS.build({**cfg, 'teacher_ckpt': None})
    deeper = small(backbone=dict(depth=34, init_cfg=None))
    with pytest.raises(RuntimeError, match='does not fit the teacher config'):
        MODELS.build({**cfg, 'teacher': deeper, 'teacher_ckpt': teacher_ckpt})


def test_cascade_roi_head_is_refused_with_a_pointer(tmp_path):
    from kdplug.registry import MODELS
    cascade = dict(backbone=SMALL['backbone'], neck=SMALL['neck'],  # its train_cfg.rcnn is a list, one per stage
                   cfg_path='mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py')
    cfg = dict(type='RoIHeadDistiller', student=cascade, teacher=small(), teacher_ckpt=str(tmp_path / 'unused.pth'),
               losses=dict(kd=dict(type='KDLoss')))
    with pytest.raises(NotImplementedError, match='CascadeRoIHead'):
        MODELS.build(cfg)


# -- the configs ----------------------------------------------------------------------------------------------------
def detection_configs() -> list:
    return sorted(p for p in DETECTION.rglob('*.py') if '_base_' not in p.parts)


@functools.lru_cache(maxsize=None)
def parsed(config: Path) -> Config:
    """Each config parsed once (``mmdet::`` bases are slow to resolve); callers copy before changing anything."""
    return Config.fromfile(str(config))


@functools.lru_cache(maxsize=None)
def resolved(model_json: str) -> dict:
    """A student / teacher entry resolved to its full mmdet config (``cfg_path`` read and the overrides merged)."""
    from kdplug.adapters.mmdet import model_config
    return model_config(json.loads(model_json))


@pytest.mark.parametrize('config', detection_configs(), ids=lambda p: str(p.relative_to(DETECTION)))
def test_every_detection_config_parses_and_its_parts_build(config):
    from kdplug.distillers.roi_distiller import check_background
    from kdplug.registry import MODELS
    cfg = parsed(config)
    assert cfg.default_scope == 'mmdet'
    assert cfg.train_dataloader.dataset.data_root in ('data/coco/', 'data/coco128/')
    if cfg.model.type != 'kdplug.RoIHeadDistiller':  # a plain mmdet teacher / student config
        assert cfg.model.type == 'FasterRCNN' and cfg.model.roi_head.bbox_head.num_classes == NUM_CLASSES
        return
    for role in ('student', 'teacher'):
        model = resolved(json.dumps(cfg.model[role].to_dict(), sort_keys=True))
        assert model['type'] == 'FasterRCNN' and model['roi_head']['bbox_head']['num_classes'] == NUM_CLASSES
    check_background(cfg.model.get('background', 'include'))
    for loss in cfg.model.losses.values():
        MODELS.build(loss)
    assert cfg.model.teacher_ckpt


def test_one_distillation_config_per_model_pair_builds_in_full(tmp_path):
    """Every distillation config differs from the others of its dataset only in ``losses``: build one per pair with
    the real R-101 teacher and R-50 student (a random teacher checkpoint stands in for the released one)."""
    from mmengine.registry import DefaultScope, MODELS as ROOT
    from kdplug.adapters.mmdet import build_detector
    pairs = {}
    for config in detection_configs():
        cfg = parsed(config)
        if cfg.model.type == 'kdplug.RoIHeadDistiller':
            model = cfg.model.to_dict()
            model.pop('losses')
            pairs.setdefault(json.dumps(model, sort_keys=True), cfg)
    assert len(pairs) == 2  # COCO (released teacher) and coco128 (teacher trained by configs/detection/teachers/)
    ckpt = tmp_path / 'r101.pth'
    for cfg in pairs.values():
        model_cfg = copy.deepcopy(cfg.model)
        if not ckpt.exists():
            torch.save(build_detector(model_cfg.teacher).state_dict(), ckpt)
        model_cfg.teacher_ckpt = str(ckpt)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = ROOT.build(model_cfg)
        assert type(model).__name__ == 'RoIHeadDistiller' and model.teacher.backbone.depth == 101
        assert model.student.backbone.depth == 50 and model.num_classes == NUM_CLASSES
