"""A third task from outside kdplug: examples/kdplug-segmentation-plugin (``SemanticSegmentationTask``, mmseg
1.2.2), pip-installed, found through its entry point, and one distillation step on real coco128 images.

Labels: semantic masks rasterized from the COCO polygons of the 4 coco128 train images (pycocotools ``annToMask``);
class 0 is background (no object: a class of its own, as in COCO-Stuff's things-only setups, so every image, the
box-less 250 too, has pixels to learn and distil), classes 1..K a compact index of the category ids present (sorted);
crowd regions would be 255 (ignored; there is none in these images). Ignored pixels (255) come from the data
preprocessor's padding (the images are resized to 128x112 and padded to 128x128 with ``seg_pad_val=255``) and from
a band the test marks in the first image.

Small models keep it fast on CPU: ResNetV1c-18 + FCN heads at 128 px without pretrained weights; the student at
output stride 8 (16x16 logits) with an auxiliary head, the teacher at output stride 16 (8x8 logits: resized to the
student's) with a wider head, saved to a checkpoint and loaded by ``CheckpointTeacher``.
"""
import copy
import importlib
import json
import os
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, TEST_DATA, pip_install_to

PACKAGE = REPO / 'examples' / 'kdplug-segmentation-plugin'
DISTRIBUTION = 'kdplug-segmentation-plugin'
COCO128 = TEST_DATA / 'coco128'
SIZE = (128, 128)            # (h, w) of the batch, after padding
RESIZED = (112, 128)         # mmcv Resize scale (w, h): the last 16 columns are padding (label 255)
IGNORE = 255
BAND = 16                    # rows of the first image marked 255 by the test
NEEDS_SEGMENTATION = ('needs mmsegmentation 1.2.2 (with ftfy, regex), mmcv with compiled ops and pycocotools: '
                      'bash tools/install.sh (full)')

NORM = dict(type='BN', requires_grad=True)
DATA_PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                         bgr_to_rgb=True, pad_val=0, seg_pad_val=IGNORE, size=SIZE)


def require_segmentation_stack() -> None:
    """Skip the module unless mmseg (its models: mmcv with compiled ops, ftfy, regex) and pycocotools import, as
    after ``bash tools/install.sh`` (full). With KDPLUG_TESTS_REQUIRE_DETECTION=1 (.ci/run: the full install) a
    missing stack fails instead of skipping."""
    try:
        import mmcv.ops  # noqa: F401
        import mmseg.models  # noqa: F401
        import pycocotools.coco  # noqa: F401
    except ImportError as error:
        if os.environ.get('KDPLUG_TESTS_REQUIRE_DETECTION') == '1':
            raise
        pytest.skip(f'{NEEDS_SEGMENTATION} ({error})', allow_module_level=True)


require_segmentation_stack()


@pytest.fixture(scope='module')
def installed_segmentation_plugin(tmp_path_factory):
    """pip-installed into a folder of its own (a copy the user installed stays as it was): first on PYTHONPATH for
    a fresh interpreter, first on sys.path here while this module runs."""
    target = tmp_path_factory.mktemp('segmentation_plugin')
    env = pip_install_to(target, PACKAGE)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield env
    sys.path.remove(str(target))
    for name in [name for name in sys.modules if name.split('.')[0] == 'kdplug_segmentation']:
        del sys.modules[name]


def test_task_is_found_through_its_entry_point(python, installed_segmentation_plugin):
    result = python(textwrap.dedent('''
        import sys
        from kdplug.registry import TASKS
        from kdplug.plugins import format_plugins, plugin_infos
        task = TASKS.build(dict(type='SemanticSegmentationTask', ignore_index=255))
        print(type(task).__module__, type(task).__name__, task.ignore_index, task.resolution, task.weighs_rows)
        print('mmseg imported' if 'mmseg' in sys.modules else 'mmseg not imported')
        print('SemanticSegmentationTask' in TASKS.all_names())
        info = next(i for i in plugin_infos() if i.name == 'segmentation')
        print(info.distribution, info.version, info.module, info.contributions['kdplug_tasks'])
        print(format_plugins())'''), env=installed_segmentation_plugin)
    assert result.returncode == 0, result.stderr
    first, lazy, listed, info, *table = result.stdout.splitlines()
    assert first == 'kdplug_segmentation.task SemanticSegmentationTask 255 logits True'
    assert lazy == 'mmseg not imported'  # loading the plugin and building the task import no mmseg
    assert listed == 'True'
    assert info == f"{DISTRIBUTION} 0.1.0 kdplug_segmentation.plugin ['SemanticSegmentationTask']"
    assert f'segmentation  [{DISTRIBUTION} 0.1.0]  (kdplug_segmentation.plugin)' in table
    assert '    kdplug_tasks: SemanticSegmentationTask' in table


def test_wrong_options_are_refused(installed_segmentation_plugin):
    from kdplug_segmentation.task import SemanticSegmentationTask
    with pytest.raises(ValueError, match='resolution'):
        SemanticSegmentationTask(resolution='pixels')
    with pytest.raises(ValueError, match='ignore_index'):
        SemanticSegmentationTask(ignore_index='255')


# -- one distillation step on real images -----------------------------------------------------------------------
def coco128_labels():
    """File -> semantic label map (H, W) uint8 of the 4 train images, and the number of classes."""
    import numpy as np
    from pycocotools.coco import COCO
    annotations = COCO128 / 'annotations' / 'instances_train2017.json'
    coco = COCO(str(annotations))
    category_ids = sorted({ann['category_id'] for ann in coco.dataset['annotations']})
    compact = {cat: index + 1 for index, cat in enumerate(category_ids)}   # 0: background
    labels = {}
    for image in json.loads(annotations.read_text())['images']:
        label = np.zeros((image['height'], image['width']), dtype=np.uint8)
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=image['id'])), key=lambda a: -a['area'])
        for ann in anns:  # largest first: a small object on a large one stays visible
            label[coco.annToMask(ann) > 0] = IGNORE if ann.get('iscrowd') else compact[ann['category_id']]
        labels[image['file_name']] = label
    return labels, len(category_ids) + 1


@pytest.fixture(scope='module')
def coco128_batch():
    """The 4 images through mmcv's LoadImageFromFile and Resize (nearest for the labels) and mmseg's PackSegInputs,
    as a seg dataset's pipeline gives them; the first image's top rows marked 255."""
    from mmcv.transforms import LoadImageFromFile, Resize
    from mmseg.datasets.transforms import PackSegInputs
    labels, num_classes = coco128_labels()
    load, resize, pack = LoadImageFromFile(), Resize(scale=RESIZED, keep_ratio=False), PackSegInputs()
    batch = dict(inputs=[], data_samples=[])
    for index, (name, label) in enumerate(labels.items()):
        label = label.copy()
        if index == 0:
            label[:label.shape[0] * BAND // SIZE[0]] = IGNORE
        results = resize(load(dict(img_path=str(COCO128 / 'train2017' / name), gt_seg_map=label,
                                   seg_fields=['gt_seg_map'], reduce_zero_label=False)))
        packed = pack(results)
        batch['inputs'].append(packed['inputs'])
        batch['data_samples'].append(packed['data_samples'])
    assert [tuple(sample.gt_sem_seg.data.shape) for sample in batch['data_samples']] == [(1, 128, 112)] * 4
    return batch, num_classes


def segmentor(num_classes: int, strides, dilations, channels: int, auxiliary: bool = False) -> dict:
    head = dict(type='FCNHead', in_channels=512, in_index=3, channels=channels, num_convs=1, concat_input=True,
                dropout_ratio=0.1, num_classes=num_classes, norm_cfg=NORM, align_corners=False,
                loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True))
    cfg = dict(type='EncoderDecoder', data_preprocessor=DATA_PREPROCESSOR, pretrained=None,
               backbone=dict(type='ResNetV1c', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), strides=strides,
                             dilations=dilations, norm_cfg=NORM, norm_eval=False, style='pytorch',
                             contract_dilation=True, init_cfg=None),
               decode_head=head, train_cfg=dict(), test_cfg=dict(mode='whole'))
    if auxiliary:
        cfg['auxiliary_head'] = dict(head, in_channels=256, in_index=2, channels=32, concat_input=False,
                                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4,
                                                      avg_non_ignore=True))
    return cfg


@pytest.fixture(scope='module')
def distill_setup(installed_segmentation_plugin, coco128_batch, tmp_path_factory):
    from kdplug_segmentation.task import SemanticSegmentationTask
    _, num_classes = coco128_batch
    student = segmentor(num_classes, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), channels=32, auxiliary=True)
    teacher = segmentor(num_classes, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), channels=64)
    torch.manual_seed(0)
    model = SemanticSegmentationTask().build_model(teacher, 'teacher')
    model.init_weights()
    checkpoint = tmp_path_factory.mktemp('seg_teacher') / 'teacher.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'note': 'test teacher'}}, checkpoint)
    return SemanticSegmentationTask, student, dict(type='CheckpointTeacher', model=teacher,
                                                   checkpoint=str(checkpoint))


def build_distiller(distill_setup, **task_options):
    from kdplug.registry import MODELS
    task_class, student, teacher = distill_setup
    torch.manual_seed(1)
    # the task by class: in a pytest process that loaded kdplug's plugins before the fixture installed this one,
    # the name is not registered (the fresh interpreter above builds it by name)
    return MODELS.build(dict(type='Distiller', task=dict(type=task_class, **task_options), student=student,
                             teacher=teacher, losses=dict(kd=dict(type='KDLoss', temperature=2.0),
                                                          dkd=dict(type='DKDLoss', beta=2.0))))


def labels_at(data_samples, size, mode='nearest-exact'):
    labels = torch.stack([sample.gt_sem_seg.data for sample in data_samples]).float()
    return F.interpolate(labels, size=size, mode=mode).long().reshape(-1)


def test_the_plugins_task_keeps_kdplug_s_contract(distill_setup, coco128_batch, tmp_path, one_thread):
    """What a plugin's own tests do (docs/plugins.md): kdplug.testing's checks, with the plugin's example (the
    segmentor student and the coco128 batch as its data preprocessor gives them)."""
    from kdplug.testing import check_task
    task_class, student, _ = distill_setup
    batch, _ = coco128_batch
    data = build_distiller(distill_setup).data_preprocessor(copy.deepcopy(batch), training=True)
    check_task(dict(type=task_class), student, data['inputs'], data['data_samples'], position='layer3',
               work_dir=tmp_path)


def test_distillation_step_on_coco128(distill_setup, coco128_batch, one_thread):
    batch, num_classes = coco128_batch
    distiller = build_distiller(distill_setup)
    distiller.train()
    assert distiller.teacher.model.decode_head.num_classes == num_classes == 7
    data = distiller.data_preprocessor(batch, training=True)
    inputs, data_samples = data['inputs'], data['data_samples']
    assert inputs.shape == (4, 3) + SIZE
    padded = torch.stack([s.gt_sem_seg.data for s in data_samples])
    assert padded.shape == (4, 1) + SIZE and (padded[..., RESIZED[0]:] == IGNORE).all()  # padding is ignored

    losses = distiller(inputs, data_samples, mode='loss')
    own = {'student.decode.loss_ce', 'student.decode.acc_seg', 'student.aux.loss_ce'}
    distill = {'distill.loss_kd', 'distill.loss_dkd'}
    assert own | distill | {'distill.num_pixels'} <= set(losses), sorted(losses)
    assert all(torch.isfinite(losses[key]).all() for key in own | distill), losses
    assert all(losses[key] > 0 for key in distill), losses
    # rows at the student's 16x16 logits; the teacher's 8x8 logits resized to them; ignored cells do not count
    expected = labels_at(data_samples, (16, 16))
    assert losses['distill.num_pixels'].item() == (expected != IGNORE).sum().item() < 4 * 16 * 16

    head = distiller.student.decode_head.conv_seg
    sum(losses[key] for key in distill).backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0   # distillation alone reaches the head
    assert all(p.grad is None for p in distiller.teacher.model.parameters())

    # ignored pixels weigh 0 and change no distillation loss
    with torch.no_grad():
        out = distiller.task.student_forward(distiller.student, inputs, data_samples)
        (rows,), (teacher_logits,) = out.rows, distiller.teacher.teach(distiller.task, inputs, data_samples, out)[0]
    assert rows.logits.shape == teacher_logits.shape == (4 * 16 * 16, num_classes)
    ignored = expected == IGNORE
    assert ignored.view(4, 16, 16)[0, :BAND * 16 // SIZE[0]].all() and ignored.view(4, 16, 16)[:, :, 14:].all()
    assert torch.equal(rows.weight, (~ignored).float())
    assert torch.equal(rows.target, torch.where(ignored, 0, expected))          # a valid class where ignored
    noise = torch.randn_like(rows.logits) * 50 * ignored.unsqueeze(1)
    for name in ('kd', 'dkd'):
        loss = distiller.losses[name]
        value = loss(rows.logits, teacher_logits, rows.target, weight=rows.weight)
        perturbed = loss(rows.logits + noise, teacher_logits - noise, torch.where(ignored, 3, rows.target),
                         weight=rows.weight)
        kept = loss(rows.logits[~ignored], teacher_logits[~ignored], rows.target[~ignored])
        assert torch.allclose(value, perturbed) and torch.allclose(value, kept), (name, value, perturbed, kept)


def test_rows_at_label_resolution(distill_setup, coco128_batch, one_thread):
    batch, _ = coco128_batch
    distiller = build_distiller(distill_setup, resolution='labels')
    distiller.train()
    data = distiller.data_preprocessor(batch, training=True)
    with torch.no_grad():
        out = distiller.task.student_forward(distiller.student, data['inputs'], data['data_samples'])
        losses = distiller(data['inputs'], data['data_samples'], mode='loss')
    (rows,) = out.rows
    labels = labels_at(data['data_samples'], SIZE)
    assert rows.logits.shape[0] == 4 * SIZE[0] * SIZE[1]
    assert torch.equal(rows.weight, (labels != IGNORE).float())   # exactly the ignored pixels, padding included
    assert (rows.weight == 0).sum() == 4 * SIZE[0] * (SIZE[1] - RESIZED[0]) + BAND * RESIZED[0]
    assert all(torch.isfinite(losses[key]) for key in ('distill.loss_kd', 'distill.loss_dkd'))


def test_a_mask_of_another_size_than_its_image_is_named(installed_segmentation_plugin):
    """A wrong mask file stopped in mmseg's loss with "stack expects each tensor to be equal size", naming none."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from kdplug_segmentation.task import SemanticSegmentationTask
    sample = SegDataSample(metainfo=dict(seg_map_path='ann/0025.png', img_path='img/0025.jpg'))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 68, 96, dtype=torch.long))
    with pytest.raises(ValueError, match=r'the label map ann/0025.png is \(68, 96\) after the pipeline and its image '
                                         r'img/0025.jpg \(128, 176\): each mask must have its image\'s size'):
        SemanticSegmentationTask.check_label_sizes(torch.zeros(1, 3, 128, 176), [sample])
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 128, 176, dtype=torch.long))
    SemanticSegmentationTask.check_label_sizes(torch.zeros(1, 3, 128, 176), [sample])
