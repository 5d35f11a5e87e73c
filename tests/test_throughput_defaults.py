"""The dataloader defaults that make kdplug's tools as fast as mmpretrain's, and proof that they change nothing the
model sees."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import REPO
from runner_helpers import load_tool, make_runner, run_config, scalars
from test_classification_distill import all_configs

DETECTION = REPO / 'configs' / 'detection' / 'kd_faster-rcnn_r101_r50_fpn_12e_coco128.py'


def train_tool():
    return load_tool('train')


def as_tools_train_runs(config, *argv) -> Config:
    tool = train_tool()
    return tool.merge_args(Config.fromfile(str(config)), tool.parse_args([str(config), *argv]))


@pytest.mark.parametrize('config', all_configs(), ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_every_classification_config_gets_mmpretrain_s_dataloader_defaults(config):
    """Batches stacked in the workers (default_collate), pinned memory, workers kept: mmpretrain's train script's
    defaults. Without default_collate the main process stacks the batch and every image crosses from a worker as
    its own shared-memory tensor (0.025 s of data_time per iteration on the demo against 0.004 s)."""
    cfg = as_tools_train_runs(config)
    for field in ('train_dataloader', 'val_dataloader'):
        loader = cfg[field]
        assert loader.collate_fn.type == 'default_collate', field
        assert loader.pin_memory is True
        assert loader.persistent_workers is bool(loader.get('num_workers', 0))


def test_the_shipped_dataset_configs_carry_the_defaults_themselves():
    """So that mmpretrain's own tools and a plain mmengine Runner run them as fast as kdplug's tools do."""
    for name in ('cifar10_folder.py', 'cifar100.py', 'tiny_imagenet_folder.py'):
        cfg = Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' / name))
        for field in ('train_dataloader', 'val_dataloader'):
            assert cfg[field].collate_fn.type == 'default_collate' and cfg[field].pin_memory, (name, field)


def test_the_flags_and_the_config_win_and_detection_keeps_mmdet_s_defaults():
    from conftest import require_detection_stack
    require_detection_stack()
    cfg = as_tools_train_runs(REPO / 'configs' / 'demo' / 'kd_resnet20_resnet8_4e_cifar10-10k.py',
                              '--no-pin-memory', '--no-persistent-workers')
    assert cfg.train_dataloader.pin_memory is False and cfg.train_dataloader.persistent_workers is False
    cfg = as_tools_train_runs(REPO / 'configs' / 'demo' / 'kd_resnet20_resnet8_4e_cifar10-10k.py',
                              '--cfg-options', 'train_dataloader.collate_fn.type=pseudo_collate')
    assert cfg.train_dataloader.collate_fn.type == 'pseudo_collate'
    cfg = as_tools_train_runs(DETECTION)
    assert cfg.train_dataloader.get('collate_fn') is None and cfg.train_dataloader.get('pin_memory') is None


def test_default_collate_changes_nothing_the_model_sees(cifar10_root, teacher_checkpoint, tmp_path, one_thread):
    """Same seed, same data: the losses of every step are identical with the old collation (per-image tensors
    stacked by the data preprocessor) and the new one (stacked in the dataloader)."""
    losses = {}
    for collate in ('pseudo_collate', 'default_collate'):
        cfg = run_config(cifar10_root, tmp_path / collate, teacher_checkpoint, max_iters=4)
        cfg.train_dataloader.collate_fn = dict(type=collate)
        cfg.train_dataloader.pin_memory = collate == 'default_collate'
        make_runner(cfg).train()
        losses[collate] = [(r['loss'], r['distill.loss_kd']) for r in scalars(tmp_path / collate) if 'loss' in r]
    assert len(losses['default_collate']) == 4
    assert losses['default_collate'] == losses['pseudo_collate']
    assert torch.tensor(losses['default_collate']).std(0).min() > 0  # the steps differ: real, changing batches


def test_cached_load_returns_what_load_image_from_file_returns(cifar10_root, tmp_path):
    """Same arrays and keys, on the first (decoding) and later (cached) passes; the cache is not written through."""
    import shutil
    from mmcv.transforms import LoadImageFromFile
    from kdplug.registry import TRANSFORMS
    images = sorted((cifar10_root / 'train').glob('*/*.jpg'))[:5]
    copies = [Path(shutil.copy(path, tmp_path / f'{i}.jpg')) for i, path in enumerate(images)]
    cached, plain = TRANSFORMS.build(dict(type='CachedLoadImageFromFile')), LoadImageFromFile()
    first = [cached(dict(img_path=str(path))) for path in copies]
    for path in copies:
        path.unlink()
    for path, image, decoded in zip(copies, images, first):
        expected = plain(dict(img_path=str(image)))
        again = cached(dict(img_path=str(path)))  # the file is gone: served from memory
        for results in (decoded, again):
            assert set(results) == set(expected)
            assert np.array_equal(results['img'], expected['img'])
            assert results['img_shape'] == expected['img_shape'] and results['ori_shape'] == expected['ori_shape']
        again['img'][:] = 0  # a transform writing into its input does not reach the cache
        assert np.array_equal(cached(dict(img_path=str(path)))['img'], expected['img'])


@pytest.mark.parametrize('loader', ['CachedLoadImageFromFile', 'CheckedLoadImageFromFile'])
def test_loaders_name_an_image_they_cannot_decode(cifar10_root, tmp_path, loader):
    """An empty file (OpenCV's error said only "!buf.empty()"), a damaged one and a missing one: the message names
    the file; ignore_empty=True still skips a missing file, as mmcv's loader does."""
    from mmcv.transforms import LoadImageFromFile

    from kdplug.registry import TRANSFORMS
    load = TRANSFORMS.build(dict(type=loader))
    image = sorted((cifar10_root / 'train').glob('*/*.jpg'))[0].read_bytes()
    (tmp_path / 'empty.jpg').write_bytes(b'')
    (tmp_path / 'damaged.jpg').write_bytes(image[:20] + bytes(len(image) - 20))
    (tmp_path / 'truncated.jpg').write_bytes(image[:300])
    (tmp_path / 'text.jpg').write_bytes(b'garbage')  # mmcv: AssertionError "failed to load image", no fix
    for name in ('empty.jpg', 'damaged.jpg', 'truncated.jpg', 'text.jpg'):
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / name)) +
                           ' cannot be decoded .*empty, damaged or not an image. Replace it'):
            load(dict(img_path=str(tmp_path / name)))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'missing.jpg'))):
        load(dict(img_path=str(tmp_path / 'missing.jpg')))
    assert TRANSFORMS.build(dict(type=loader, ignore_empty=True))(
        dict(img_path=str(tmp_path / 'missing.jpg'))) is None
    good = tmp_path / 'good.jpg'
    good.write_bytes(image)
    assert np.array_equal(load(dict(img_path=str(good)))['img'], LoadImageFromFile()(dict(img_path=str(good)))['img'])


def test_cached_load_changes_nothing_the_model_sees(cifar10_root, teacher_checkpoint, tmp_path, one_thread):
    """Two epochs and more of the demo's pipeline (the cache serves from the second): identical losses per step."""
    losses = {}
    for load in ('LoadImageFromFile', 'kdplug.CachedLoadImageFromFile'):
        cfg = run_config(cifar10_root, tmp_path / load, teacher_checkpoint, max_iters=12)  # 80 images, batch 8
        cfg.train_dataloader.dataset.pipeline[0] = dict(type=load)
        make_runner(cfg).train()
        losses[load] = [(r['loss'], r['distill.loss_kd']) for r in scalars(tmp_path / load) if 'loss' in r]
    assert len(losses['LoadImageFromFile']) == 12
    assert losses['kdplug.CachedLoadImageFromFile'] == losses['LoadImageFromFile']


def test_the_replayable_crop_and_flip_change_nothing_the_model_sees(cifar10_root, teacher_checkpoint, tmp_path,
                                                                    one_thread):
    """The dataset configs use kdplug's ReplayRandomCrop / ReplayRandomFlip (less work per image): the same
    losses, step by step, as with mmpretrain's RandomCrop and mmcv's RandomFlip, over more than an epoch."""
    losses = {}
    for kind in ('mmpretrain', 'kdplug'):
        cfg = run_config(cifar10_root, tmp_path / kind, teacher_checkpoint, max_iters=12)
        pipeline = cfg.train_dataloader.dataset.pipeline
        assert [t['type'] for t in pipeline[1:3]] == ['kdplug.ReplayRandomCrop', 'kdplug.ReplayRandomFlip']
        if kind == 'mmpretrain':
            pipeline[1] = dict(type='RandomCrop', crop_size=32, padding=4)
            pipeline[2] = dict(type='RandomFlip', prob=0.5, direction='horizontal')
        make_runner(cfg).train()
        losses[kind] = [(r['loss'], r['distill.loss_kd']) for r in scalars(tmp_path / kind) if 'loss' in r]
    assert len(losses['mmpretrain']) == 12
    assert losses['kdplug'] == losses['mmpretrain']


def test_the_cpu_demo_runs_its_pipeline_in_the_main_process():
    """On a CPU the model's threads take every core: dataloader workers would compete with them (docs/benchmarks.md).
    The demo's configs say so; the full-size dataset configs keep their workers for GPUs."""
    for name in ('student_resnet8_4e_cifar10-10k.py', 'kd_resnet20_resnet8_4e_cifar10-10k.py',
                 'teacher_resnet20_4e_cifar10-10k.py'):
        cfg = as_tools_train_runs(REPO / 'configs' / 'demo' / name)
        assert cfg.train_dataloader.num_workers == 0 and cfg.train_dataloader.persistent_workers is False, name
    assert Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' / 'cifar10_folder.py')).train_dataloader\
        .num_workers >= 2


def test_pipeline_benchmark_prints_the_three_speeds_and_the_ratio(cifar10_root):
    """tools/benchmark.py pipeline on the few images the tests use (1 iteration an epoch): a row per run."""
    import subprocess
    import sys
    images = sorted(p.relative_to(cifar10_root / 'train') for p in (cifar10_root / 'train').glob('*/*.jpg'))
    classes = sorted({p.parts[0] for p in images})
    (cifar10_root / 'meta').mkdir(exist_ok=True)
    (cifar10_root / 'meta' / 'bench.txt').write_text(''.join(f'{p} {classes.index(p.parts[0])}\n' for p in images))
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), 'pipeline', '--data-root',
                             str(cifar10_root), '--ann-file', 'meta/bench.txt', '--warmup', '0',
                             '--rounds', '1'],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in result.stdout.splitlines() if line.startswith('| ') and 'img/s' not in line}
    assert set(rows) == {'student alone', 'KD'}
    for cells in rows.values():
        kdplug, mmpretrain, plain, ratio = cells
        assert float(kdplug) > 0 and float(mmpretrain) > 0 and float(plain) > 0
        expected = 100 * float(kdplug) / float(plain)
        assert abs(int(ratio.rstrip('%')) - expected) <= 0.05 * expected + 1  # the img/s shown are rounded
