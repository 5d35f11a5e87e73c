"""Speed (and, on a GPU, peak memory) of kdplug's losses and of a distillation step, as a table.

    python tools/benchmark.py losses [--device cuda] [--repeat 50]
    python tools/benchmark.py step [--device cuda] [--batch-size 64] [--repeat 20]
    python tools/benchmark.py detection [--device cuda] [--batch-size 2] [--repeat 20] [--data-root data/coco128]
    python tools/benchmark.py pipeline [--data-root data/cifar10] [--ann-file meta/train_5000.txt]
    python tools/benchmark.py cache [--device cuda] [--images 200]

``losses``: forward + backward of every registered loss on random logits of typical shapes (CIFAR-100 batch,
ImageNet batch, Faster R-CNN RoIs: 2 images x 512 RoIs x 81 classes). ``step``: one training step (forward, backward,
SGD) of a CIFAR student (resnet8x4) alone, and distilled from resnet32x4 with KD / NormKD / DKD, through the
distiller's train_step; the teacher forward alone is timed too, so the distillation overhead can be compared with
its floor (student step + teacher forward), and KD with the teacher's logits read from a teacher cache
(``CachedTeacher``) against the student step alone. ``detection``: the same for Faster R-CNN R-50-FPN distilled
from R-101-FPN (configs/detection/*_coco128.py) on real coco128 train images (tools/prepare_data.py coco128),
through the distiller's train_step (``kdplug.Distiller`` with ``TwoStageDetectionTask``), with KD, NKD, NormKD and
KD with background RoIs excluded. Weights are random (the cost does not depend on them; no download). Median of
``--repeat`` runs after warm-up; on a GPU each row also gives its peak memory (torch.cuda.max_memory_allocated,
reset before the row: weights, gradients, activations).
``pipeline``: images per second of real ``tools/train.py`` runs of the demo's configs (student alone, KD; CPU), through
kdplug's tool and through mmpretrain's own, beside a plain PyTorch loop with the same models, batch, augmentation,
losses and optimizer on in-memory tensors: the whole cost of the framework, the data pipeline and kdplug, as a ratio.
``cache``: tools/cache_teacher.py's views per second and the size of a whole store, per dataset.
"""
import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: str, repeat: int, warmup: int = 3) -> float:
    return timed_turns([fn], device, repeat, warmup)[0]


def timed_turns(fns: list, device: str, repeat: int, warmup: int = 3) -> list:
    """Median ms of each function, all run in turns ``repeat`` times (after ``warmup`` turns): each sees the same
    machine, whose speed drifts by tens of percent within minutes on a small one."""
    times = [[] for _ in fns]
    for turn in range(warmup + repeat):
        for fn, out in zip(fns, times):
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == 'cuda':
                torch.cuda.synchronize()
            if turn >= warmup:
                out.append(time.perf_counter() - start)
    return [statistics.median(out) * 1000 for out in times]


def peak_mb(device: str) -> str:
    return f'{torch.cuda.max_memory_allocated() / 2**20:.0f}' if device == 'cuda' else '-'


def reset_peak(device: str) -> None:
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()


def print_step_table(rows: list, header: str) -> None:
    """rows: (what, ms, peak MiB); rows[0] is the student alone, rows[1] the teacher forward, and rows[2], if it is
    the two run back to back, the floor (else their sum is)."""
    floor = rows[0][1] + rows[1][1]
    if len(rows) > 2 and 'the floor, run' in rows[2][0]:
        print(f'{header}; student step + teacher forward, each timed alone = {floor:.1f} ms; floor = the two run '
              f'back to back = {rows[2][1]:.1f} ms')
        floor = rows[2][1]
    else:
        print(f'{header}; floor = student step + teacher forward = {floor:.1f} ms')
    print('| what | ms (median) | vs student step | vs floor | peak memory (MiB) |')
    print('|---|---|---|---|---|')
    for what, ms, peak in rows:
        ratio = '' if what.startswith('teacher forward (') else f'{ms / rows[0][1] - 1:+.0%}'
        # a cached teacher runs no teacher forward: its floor is the student step itself
        over = f'{ms / floor - 1:+.0%}' if what.startswith('distillation') and 'cached' not in what else ''
        print(f'| {what} | {ms:.1f} | {ratio} | {over} | {peak} |')


def row(what: str, fn: Callable[[], object], device: str, repeat: int, warmup: int) -> tuple:
    reset_peak(device)
    ms = timed(fn, device, repeat, warmup)
    return what, ms, peak_mb(device)


def bench_losses(device: str, repeat: int, warmup: int) -> None:
    """Every registered loss, forward + backward, and its cost relative to KD's at N=256, C=1000 (multi-temperature
    KD per temperature of its set: it softens with each), KD and the loss timed in turns."""
    from kdplug.plugins import plugin_infos
    from kdplug.registry import MODELS
    names = [n for info in plugin_infos() for n in info.contributions.get('kdplug_losses', [])]
    shapes = [(64, 100), (256, 1000), (1024, 81)]
    print('| loss | ' + ' | '.join(f'N={n}, C={c} (ms)' for n, c in shapes) + ' | vs KD at N=256, C=1000 |')
    print('|---|' + '---|' * (len(shapes) + 1))
    kd = MODELS.build(dict(type='KDLoss')).to(device)
    for name in ['KDLoss'] + [n for n in names if n != 'KDLoss']:
        loss = MODELS.build(dict(type=name)).to(device)  # logit losses build from their defaults (conformance test)
        cells, ratio = [], 1.0
        for n, c in shapes:
            s = torch.randn(n, c, device=device, requires_grad=True)
            t = torch.randn(n, c, device=device)
            y = torch.randint(0, c, (n,), device=device)
            if (n, c) == (256, 1000) and name != 'KDLoss':
                kd_ms, ms = timed_turns([lambda: kd(s, t, y).backward(), lambda: loss(s, t, y).backward()],
                                        device, repeat, warmup)
                ratio = ms / kd_ms
            else:
                ms = timed(lambda: loss(s, t, y).backward(), device, repeat, warmup)
            cells.append(ms)
        per = len(getattr(getattr(loss, 'temperature', None), 'values', ())) if name == 'MultiTempKDLoss' else 1
        note = f' ({per} temperatures: per temperature)' if per > 1 else ''
        print(f'| {name} | ' + ' | '.join(f'{ms:.2f}' for ms in cells) + f' | {ratio / per:.2f}x{note} |')
    print_ranking_cost(device, repeat, warmup)


def print_ranking_cost(device: str, repeat: int, warmup: int) -> None:
    """USKD ranks all C classes of every sample: its sort, kdplug's and torch's, next to KD's forward + backward."""
    from kdplug.losses import KDLoss
    from kdplug.losses.functional import descending_order
    kd = KDLoss().to(device)
    s = torch.randn(256, 1000, device=device, requires_grad=True)
    t = torch.randn(256, 1000, device=device)
    kd_ms, ours, torchs = timed_turns([lambda: kd(s, t).backward(), lambda: descending_order(t),
                                       lambda: t.argsort(dim=-1, descending=True, stable=True)], device, repeat, warmup)
    print(f'\nUSKD\'s ranking at N=256, C=1000: descending_order {ours:.2f} ms ({ours / kd_ms:.2f}x KD), '
          f'torch.argsort(stable) {torchs:.2f} ms ({torchs / kd_ms:.2f}x KD)')


def build_classifier(cfg: dict):
    """An mmpretrain classifier, built as the distiller builds its student (in mmpretrain's scope)."""
    from kdplug.tasks.classification import ClassificationTask
    return ClassificationTask().build_model(ClassificationTask.model_config(cfg), 'student')


def build_detector(cfg: dict):
    """An mmdet two-stage detector (``cfg_path`` and overrides), built as the distiller builds its student."""
    from kdplug.tasks.detection import TwoStageDetectionTask
    return TwoStageDetectionTask().build_model(TwoStageDetectionTask.model_config(cfg), 'student')


def classification_distiller(student: dict, teacher: dict, checkpoint: str, losses: dict) -> dict:
    return dict(type='Distiller', task=dict(type='ClassificationTask'), student=student,
                teacher=dict(type='CheckpointTeacher', model=teacher, checkpoint=checkpoint), losses=losses)


def bench_step(device: str, batch_size: int, repeat: int, warmup: int) -> None:
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample
    from kdplug.registry import MODELS

    def classifier(backbone):
        return dict(type='ImageClassifier', backbone=dict(type=f'kdplug.{backbone}'),
                    neck=dict(type='GlobalAveragePooling'),
                    head=dict(type='LinearClsHead', num_classes=100, in_channels=256,
                              loss=dict(type='CrossEntropyLoss')))

    teacher_path = os.path.join(tempfile.gettempdir(), 'kdplug_benchmark_teacher.pth')
    torch.save(build_classifier(classifier('ResNet32x4')).state_dict(), teacher_path)
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(batch_size)],
                data_samples=[DataSample().set_gt_label(i % 100) for i in range(batch_size)])
    student = MODELS.build(classification_distiller(classifier('ResNet8x4'), classifier('ResNet32x4'), teacher_path,
                                                    dict(kd=dict(type='KDLoss')))).to(device)
    alone = student.student
    alone_wrapper = OptimWrapper(torch.optim.SGD(alone.parameters(), lr=0.01))
    steps = [('student alone (resnet8x4)', lambda: alone.train_step(data, alone_wrapper))]
    teacher_inputs = student.data_preprocessor(data, False)['inputs']

    def teacher_forward():  # through the task, as a distillation step scores the batch
        with torch.no_grad():
            student.task.logits(student.teacher_model, teacher_inputs)
    steps.append(('teacher forward (resnet32x4)', teacher_forward))

    def both():
        teacher_forward()
        alone.train_step(data, alone_wrapper)
    # the floor as one step runs it: the two networks one after the other, nothing of kdplug's (each alone reuses
    # its memory and caches from the previous repeat; in a step each evicts the other's)
    steps.append(('teacher forward then student step (the floor, run)', both))
    for name, loss in (('KD', dict(type='KDLoss', temperature=4.0)), ('NormKD', dict(type='NormKDLoss')),
                       ('DKD', dict(type='DKDLoss'))):
        model = MODELS.build(classification_distiller(classifier('ResNet8x4'), classifier('ResNet32x4'),
                                                      teacher_path, dict(loss=loss))).to(device)
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
        steps.append((f'distillation step, {name}', partial(model.train_step, data, wrapper)))
    cached_cfg = classification_distiller(classifier('ResNet8x4'), classifier('ResNet32x4'), teacher_path,
                                          dict(kd=dict(type='KDLoss', temperature=4.0)))
    cached_cfg['teacher'] = dict(cached_cfg['teacher'], type='CachedTeacher',
                                 store=teacher_store(student, teacher_path, classifier('ResNet32x4'), batch_size))
    model = MODELS.build(cached_cfg).to(device)
    model.teacher.check_data(dict(pipeline=[]), batch_size)  # as the Runner's hook does: no pipeline here, a batch
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    cached_data = dict(data, data_samples=[sample.clone() for sample in data['data_samples']])
    for index, sample in enumerate(cached_data['data_samples']):  # what kdplug's replayable transforms record
        sample.set_metainfo(dict(sample_idx=index, view={'crop': (0, 0)}))
    steps.append(('distillation step, KD, cached teacher', partial(model.train_step, cached_data, wrapper)))
    # every step in turns, so that each row sees the same machine (a small one's speed drifts by 5-10% in minutes)
    medians = timed_turns([fn for _, fn in steps], device, repeat, warmup)
    peaks = []
    for _, fn in steps:  # each one's own peak (a GPU's: '-' on a CPU)
        reset_peak(device)
        fn()
        peaks.append(peak_mb(device))
    rows = [(what, ms, peak) for (what, _), ms, peak in zip(steps, medians, peaks)]
    print_step_table(rows, f'batch {batch_size}, 32x32, {device}, the rows timed in turns')


def teacher_store(distiller, checkpoint: str, teacher_cfg: dict, images: int) -> str:
    """A teacher cache of ``images`` images, one view each, made from this teacher (its logits are random: the
    step's cost does not depend on them)."""
    import numpy as np

    from kdplug.teachers.cache_store import TeacherCacheStore
    from kdplug.teachers.cached import made_from
    path = tempfile.mkdtemp(prefix='kdplug_benchmark_cache_')
    classes = distiller.task.num_classes(distiller.student)
    store = TeacherCacheStore.create(path, dict(
        mode='views', slots=1, num_images=images, num_classes=classes, dtype='float16', layout=[('crop', 2)],
        made_from=made_from(distiller.task, teacher_cfg, checkpoint, distiller.data_preprocessor)))
    for index in range(images):
        store.write(index, np.random.randn(1, classes), np.zeros((1, 2), dtype=np.int32))
    store.mark_complete()
    return path


def bench_detection(device: str, batch_size: int, repeat: int, warmup: int, data_root: str) -> None:
    import copy

    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper
    from mmengine.registry import DefaultScope
    from kdplug.registry import MODELS

    MMLogger.get_instance('kdplug_benchmark', log_level='WARNING')  # no per-parameter init_weights report
    config = os.path.join(os.path.dirname(__file__), '..', 'configs', 'detection',
                          'kd_faster-rcnn_r101_r50_fpn_12e_coco128.py')
    cfg = Config.fromfile(config)
    no_download = dict(backbone=dict(init_cfg=None))  # random weights: the cost does not depend on them
    student_cfg = dict(cfg.model.student, **no_download)
    teacher_cfg = dict(cfg.model.teacher.model, **no_download)
    teacher_path = os.path.join(tempfile.gettempdir(), 'kdplug_benchmark_detection_teacher.pth')
    torch.manual_seed(0)
    teacher = build_detector(teacher_cfg)
    teacher.init_weights()  # mmdet's initialisation of the heads: the RPN proposes as a trained one would (1000 boxes)
    torch.save(teacher.state_dict(), teacher_path)

    from mmdet.registry import DATASETS
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.update(data_root=os.path.join(data_root, ''),
                       ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(dataset_cfg)
    data = pseudo_collate([dataset[i] for i in range(batch_size)])
    boxes = sum(len(sample.gt_instances) for sample in data['data_samples'])
    shapes = [tuple(image.shape[1:]) for image in data['inputs']]

    def distiller(losses: dict, background='include'):
        torch.manual_seed(0)
        model = MODELS.build(dict(type='Distiller', task=dict(type='TwoStageDetectionTask', background=background),
                                  student=student_cfg, losses=losses,
                                  teacher=dict(type='CheckpointTeacher', model=teacher_cfg, checkpoint=teacher_path)))
        model.student.init_weights()
        return model

    def optim_wrapper(model):
        # lr 0: every repeat does the same work (random weights that train would change the RPN's proposals)
        return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))

    # one model on the device at a time, so that each row's GPU peak is its own
    rows = []
    model = distiller(dict(kd=dict(type='KDLoss', temperature=1.0)))
    alone = model.student.to(device)  # the teacher network (outside the student) stays on the CPU for this row
    alone_wrapper = optim_wrapper(alone)
    rows.append(row('student alone (R-50-FPN)', lambda: alone.train_step(data, alone_wrapper), device, repeat, warmup))
    model.to(device)
    with torch.no_grad():  # the RoIs a training step samples, as the task records them
        batch = model.data_preprocessor(copy.deepcopy(data), True)
        sampled = model.task.student_forward(model.student, batch['inputs'], batch['data_samples'])
    rois = sum(len(rows.logits) for rows in sampled.rows)

    def teacher_forward():  # the teacher scores those RoIs through the task, as in a distillation step
        with torch.no_grad():
            model.task.teacher_logits(model.teacher_model, batch['inputs'], batch['data_samples'], sampled)
    rows.append(row(f'teacher forward (R-101-FPN, {rois} RoIs)', teacher_forward, device, repeat, warmup))
    for name, losses, background in (
            ('KD', dict(kd=dict(type='KDLoss', temperature=1.0)), 'include'),
            ('KD, background excluded', dict(kd=dict(type='KDLoss', temperature=1.0)), 'exclude'),
            ('NKD', dict(nkd=dict(type='NKDLoss', temperature=1.0, gamma=1.5)), 'include'),
            ('NormKD', dict(normkd=dict(type='NormKDLoss')), 'include')):
        model = wrapper = batch = sampled = None  # free the previous row's model first
        model = distiller(losses, background).to(device)
        wrapper = optim_wrapper(model)
        rows.append(row(f'distillation step, {name}', lambda: model.train_step(data, wrapper), device, repeat, warmup))
    print_step_table(rows, f'Faster R-CNN, batch {batch_size} coco128 train images {shapes} ({boxes} boxes), '
                           f'{device}')


#: (dataset, images of its training split, views of each (pad-and-crop x flip), classes, teacher config, data config)
CACHE_DATASETS = (
    ('CIFAR-10', 50000, 9 * 9 * 2, 10, 'configs/kd/kd_resnet56_resnet20_240e_cifar10.py', 'data/cifar10'),
    ('CIFAR-100', 50000, 9 * 9 * 2, 100, None, None),
    ('Tiny-ImageNet', 100000, 17 * 17 * 2, 200, 'configs/kd/kd_resnet56_resnet20_240e_tiny-imagenet.py',
     'data/tiny-imagenet-200'),
)


def bench_cache(device: str, images: int) -> None:
    """tools/cache_teacher.py on the first ``images`` training images of each prepared dataset (random teacher
    weights: the cost does not depend on them): views per second, and the size of the whole store (float16)."""
    import subprocess
    import sys

    from mmengine.config import Config
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    replay = [dict(type='kdplug.CachedLoadImageFromFile'), None, dict(type='kdplug.ReplayRandomFlip', prob=0.5),
              dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'view'))]
    print(f'tools/cache_teacher.py --mode views on {device}, the first {images} training images, random weights')
    print('| dataset | teacher | views / image | store (float16, whole split) | views / s | whole split (h) |')
    print('|---|---|---|---|---|---|')
    measured = {}
    for name, count, views, classes, config, data_root in CACHE_DATASETS:
        size = f'{count * views * classes * 2 / 2 ** 30:.2f} GiB'
        if config is None or not os.path.isdir(os.path.join(repo, data_root)):
            rate = measured.get('CIFAR-10')  # same images and views; a 100-way head costs next to nothing more
            note = f'{rate:.0f} (as CIFAR-10)' if rate else '-'
            hours = f'{count * views / rate / 3600:.1f}' if rate else '-'
            print(f'| {name} | resnet56 | {views} | {size} | {note} | {hours} |')
            continue
        cfg = Config.fromfile(os.path.join(repo, config))
        work = tempfile.mkdtemp(prefix='kdplug_benchmark_cache_')
        teacher = build_classifier(cfg.model.teacher.model)
        cfg.model.teacher.checkpoint = os.path.join(work, 'teacher.pth')
        torch.save(teacher.state_dict(), cfg.model.teacher.checkpoint)
        crop = next(t for t in cfg.train_dataloader.dataset.pipeline if t['type'].endswith('RandomCrop'))
        pipeline = list(replay)
        pipeline[1] = dict(crop, type='kdplug.ReplayRandomCrop')
        cfg.train_dataloader.dataset.update(data_root=os.path.join(repo, data_root), indices=images,
                                            pipeline=pipeline)
        cfg.dump(os.path.join(work, 'config.py'))
        start = time.perf_counter()
        tool = os.path.join(repo, 'tools', 'cache_teacher.py')
        subprocess.run([sys.executable, tool, os.path.join(work, 'config.py'),
                        '--out', os.path.join(work, 'store'), '--device', device], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rate = images * views / (time.perf_counter() - start)
        measured[name] = rate
        print(f'| {name} | resnet56 | {views} | {size} | {rate:.0f} | {count * views / rate / 3600:.1f} |')
    print('ImageNet (estimated): RandomResizedCrop draws from a continuous range, so a store holds the views of E '
          f'seeded epochs (--mode epochs): 1.28M images x E x 1000 classes x 2 bytes = {1.28e6 * 1000 * 2 / 2**30:.1f} '
          'GiB per epoch.')


PIPELINE_RUNS = (('student alone', 'student_resnet8_4e_cifar10-10k.py'),
                 ('KD', 'kd_resnet20_resnet8_4e_cifar10-10k.py'))


def mmpretrain_train_tool() -> str:
    """mmpretrain's own tools/train.py, shipped inside its package."""
    import mmpretrain
    return os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')


def train_tool_seconds_per_iter(config: str, teacher_path: str, data_root: str, ann_file: str, warmup: int,
                                work_dir: str, extra: tuple = (), tool: str = '') -> float:
    """Median of mmengine's logged ``time`` per iteration of the second of two epochs of ``tools/train.py CONFIG``
    (after ``warmup`` iterations of it), run as a user runs it: the steady state of a run whose workers are up and
    whose images are decoded (the demo trains 4 epochs, the papers' recipes 240)."""
    import glob
    import json
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    options = ['train_cfg.max_epochs=2', 'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=100',
               'default_hooks.checkpoint.save_last=False', 'default_hooks.checkpoint.save_best=None',
               f'train_dataloader.dataset.data_root={data_root}', f'train_dataloader.dataset.ann_file={ann_file}',
               f'model.teacher.checkpoint={teacher_path}', 'custom_hooks=[]', *extra]
    if 'student' in os.path.basename(config):
        options.remove(f'model.teacher.checkpoint={teacher_path}')
    tool = tool or os.path.join(repo, 'tools', 'train.py')
    subprocess.run([sys.executable, tool, config, '--work-dir', work_dir, '--no-validate', '--cfg-options', *options],
                   check=True, capture_output=True, cwd=repo)
    scalars = sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')))[-1]
    records = [json.loads(line) for line in open(scalars)]
    times = [r['time'] for r in records if 'time' in r and r.get('epoch') == 2]
    return statistics.median(times[warmup:])


def plain_loop_seconds_per_iter(config: str, teacher_path: str, images: torch.Tensor, labels: torch.Tensor,
                                iters: int, warmup: int) -> float:
    """The same models, batch, augmentation (pad-4 crop, flip), normalisation, losses and SGD as the config, as a
    plain PyTorch loop on in-memory tensors: the floor a training framework adds its cost to."""
    import torch.nn.functional as F
    from mmengine.config import Config
    from kdplug.registry import MODELS
    cfg = Config.fromfile(config)
    distilled = cfg.model.get('type') == 'kdplug.Distiller'
    student = build_classifier(cfg.model.student if distilled else cfg.model)
    teacher = build_classifier(cfg.model.teacher.model).eval() if distilled else None
    if teacher is not None:
        teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
        losses = [MODELS.build(loss) for loss in cfg.model.losses.values()]
    ce_weight = (cfg.model.student if distilled else cfg.model).head.loss.get('loss_weight', 1.0)
    optim = cfg.optim_wrapper.optimizer
    optimizer = torch.optim.SGD(student.parameters(), lr=optim.lr, momentum=optim.momentum,
                                weight_decay=optim.weight_decay, nesterov=optim.nesterov)
    mean = torch.tensor(cfg.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(1, 3, 1, 1)
    batch = cfg.train_dataloader.batch_size
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        index = torch.randint(0, len(images), (batch,), generator=generator)
        padded = F.pad(images[index], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2, batch), generator=generator).tolist()
        crops = torch.stack([padded[i, :, y:y + 32, x:x + 32] for i, (y, x) in enumerate(zip(dy, dx))])
        flip = torch.rand(batch, generator=generator) < 0.5
        crops[flip] = crops[flip].flip(-1)
        inputs = (crops.float() - mean) / std
        target = labels[index]
        logits = student(inputs, mode='tensor')
        loss = ce_weight * F.cross_entropy(logits, target)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(inputs, mode='tensor')
            loss = loss + sum(fn(logits, teacher_logits, target) for fn in losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def bench_pipeline(data_root: str, ann_file: str, warmup: int, rounds: int) -> None:
    import cv2
    import numpy as np
    from mmengine.config import Config
    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', 'demo')
    lines = open(os.path.join(data_root, ann_file)).read().split('\n')
    samples = [line.rsplit(' ', 1) for line in lines if line.strip()]
    # the images as the dataset decodes them (BGR), reordered to RGB as the data preprocessor's to_rgb does
    decoded = [cv2.imread(os.path.join(data_root, 'train', path))[..., ::-1] for path, _ in samples]
    images = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([int(label) for _, label in samples])
    iters = len(samples) // 64
    # the plain loop runs here, with the malloc settings kdplug's tools/train.py applies (main() set them): the
    # ratio is then the cost of the framework, not of glibc's defaults (which slow the plain loop too)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_path = os.path.join(tmp, 'teacher.pth')
        teacher_cfg = Config.fromfile(os.path.join(configs, PIPELINE_RUNS[1][1])).model.teacher.model
        torch.save(build_classifier(teacher_cfg).state_dict(), teacher_path)
        print(f'{len(samples)} CIFAR-10 images ({ann_file}), batch 64, {torch.get_num_threads()} threads; '
              f'tools/train.py: median time per iteration of the 2nd epoch after {warmup} iterations; plain loop: '
              f'median of {iters} iterations after {warmup}; each the median of {rounds} rounds, the three runs '
              'taking turns (a small machine\'s speed drifts by 5-10% between runs)')
        print('| run | kdplug tools/train.py (img/s) | mmpretrain tools/train.py (img/s) | plain PyTorch loop '
              '(img/s) | kdplug / plain |')
        print('|---|---|---|---|---|')
        for name, config in PIPELINE_RUNS:
            path = os.path.join(configs, config)
            times = {'kdplug': [], 'mmpretrain': [], 'plain': []}
            for turn in range(rounds):
                times['kdplug'].append(train_tool_seconds_per_iter(
                    path, teacher_path, data_root, ann_file, warmup, os.path.join(tmp, f'{turn}_{config}')))
                times['mmpretrain'].append(train_tool_seconds_per_iter(
                    path, teacher_path, data_root, ann_file, warmup, os.path.join(tmp, f'{turn}_mmpretrain_{config}'),
                    tool=mmpretrain_train_tool()))
                times['plain'].append(plain_loop_seconds_per_iter(path, teacher_path, images, labels, iters, warmup))
            kdplug, mmpretrain, plain = (statistics.median(times[run]) for run in ('kdplug', 'mmpretrain', 'plain'))
            print(f'| {name} | {64 / kdplug:.0f} | {64 / mmpretrain:.0f} | {64 / plain:.0f} | {plain / kdplug:.0%} |',
                  flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('what', choices=['losses', 'step', 'detection', 'pipeline', 'cache'])
    parser.add_argument('--images', type=int, default=200, help='cache: training images to score per dataset')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--warmup', type=int, help='untimed runs first (default: 3; 1 for detection)')
    parser.add_argument('--batch-size', type=int, help='default: 64 for step, 2 for detection')
    parser.add_argument('--data-root', help='default: data/coco128 for detection, data/cifar10 for pipeline '
                        '(tools/prepare_data.py)')
    parser.add_argument('--ann-file', default='meta/train_5000.txt', help='pipeline: the training images')
    parser.add_argument('--rounds', type=int, default=3, help='pipeline: runs of each kind, taking turns (median)')
    args = parser.parse_args(argv)
    # what kdplug's tools/train.py runs with: freed memory kept for the next step instead of faulted in again
    from kdplug.engine.allocator import keep_freed_memory
    print(keep_freed_memory())
    if args.what == 'losses':
        bench_losses(args.device, args.repeat, 3 if args.warmup is None else args.warmup)
    elif args.what == 'step':
        bench_step(args.device, args.batch_size or 64, args.repeat, 3 if args.warmup is None else args.warmup)
    elif args.what == 'detection':
        bench_detection(args.device, args.batch_size or 2, args.repeat, 1 if args.warmup is None else args.warmup,
                        args.data_root or 'data/coco128')
    elif args.what == 'cache':
        bench_cache(args.device, args.images)
    else:
        bench_pipeline(args.data_root or 'data/cifar10', args.ann_file, 10 if args.warmup is None else args.warmup,
                       args.rounds)


if __name__ == '__main__':
    main()
