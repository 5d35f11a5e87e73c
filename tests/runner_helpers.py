"""Helpers to run kdplug configs through an mmengine Runner on a few real images, fast."""
import copy
import importlib.util
import itertools
import json
from pathlib import Path

import torch
from mmengine.config import Config

from conftest import REPO

DEMO = REPO / 'configs' / 'demo'
KD_CONFIG = DEMO / 'kd_resnet20_resnet8_4e_cifar10-10k.py'
EMA_CONFIG = REPO / 'configs' / 'ema-l2' / 'ema-l2_resnet20_240e_cifar10.py'


def classifier_cfg(backbone='ResNet8', num_classes=10):
    return dict(type='ImageClassifier', backbone=dict(type=f'kdplug.{backbone}'),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=64,
                          loss=dict(type='CrossEntropyLoss')))


def data_options(root) -> list:
    """--cfg-options that point a demo config's loaders at ``root`` (tools run as a user runs them)."""
    options = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.dataset.data_root={root}', f'{loader}.dataset.ann_file=', f'{loader}.num_workers=0',
                    f'{loader}.persistent_workers=False', f'{loader}.batch_size=16']
    return options


def build_classifier(cfg: dict):
    """An mmpretrain classifier from its config, as kdplug.Distiller builds its student and teacher."""
    from kdplug.tasks.classification import ClassificationTask
    return ClassificationTask().build_model(ClassificationTask.model_config(cfg), 'student')


def distiller_cfg(teacher_checkpoint, losses=None, student=None, teacher=None, **kwargs) -> dict:
    """A ``kdplug.Distiller`` config for classification: a ResNet8 student and a ResNet20 ``CheckpointTeacher``
    (CIFAR-10) unless given, KD unless other ``losses`` are given."""
    return dict(type='Distiller', task=dict(type='ClassificationTask'), student=student or classifier_cfg(),
                teacher=dict(type='CheckpointTeacher', model=teacher or classifier_cfg('ResNet20'),
                             checkpoint=teacher_checkpoint),
                losses=losses or dict(kd=dict(type='KDLoss')), **kwargs)


def save_teacher(path: Path, backbone='ResNet20', num_classes=10, seed=0) -> str:
    torch.manual_seed(seed)
    teacher = build_classifier(classifier_cfg(backbone, num_classes))
    teacher.init_weights()
    torch.save({'state_dict': teacher.state_dict(), 'meta': {'note': 'test teacher'}}, path)
    return str(path)


def run_config(cifar10_root, work_dir, teacher_checkpoint=None, config=KD_CONFIG, max_iters=3, model_from=None,
               **overrides):
    """The demo KD config on the real images, iteration-based and tiny, with a checkpoint every 2 iterations."""
    cfg = Config.fromfile(str(config))
    if model_from is not None:  # another config's model (and hooks) on the demo's CIFAR-10 data
        other = Config.fromfile(str(model_from))
        cfg.model = other.model
        cfg.custom_hooks = other.get('custom_hooks', [])
    cfg.work_dir = str(work_dir)
    if str(cfg.model.get('teacher', {}).get('type')).split('.')[-1] == 'CheckpointTeacher':
        cfg.model.teacher.checkpoint = teacher_checkpoint
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(cifar10_root)
        cfg[loader].dataset.pop('ann_file', None)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].batch_size = 8
    cfg.train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type='kdplug.AtomicCheckpointHook', interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.merge_from_dict(overrides)
    return cfg


_runs = itertools.count()


def make_runner(cfg):
    from mmengine.runner import Runner
    from kdplug.engine.checkpoint import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    cfg = copy.deepcopy(cfg)
    # mmengine keys its global logger / visualizer instances by experiment name (config name + timestamp to the
    # second): two runners built within one second would share them and log into the first one's work dir
    cfg.experiment_name = f'test_run_{next(_runs)}'
    return Runner.from_cfg(cfg)


def scalars(work_dir: Path) -> list:
    logs = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def load_tool(name: str):
    """A command-line tool of tools/ (``'train'``, ``'prepare_data'``...) as a module, to call its functions."""
    spec = importlib.util.spec_from_file_location(f'kdplug_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
