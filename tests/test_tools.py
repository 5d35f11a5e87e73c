"""The command-line tools as a user runs them: train (with OpenMMLab's flags), resume, test, export."""
import subprocess
import sys

import torch

from conftest import REPO
from runner_helpers import save_teacher

CONFIG = REPO / 'configs' / 'demo' / 'kd_resnet20_resnet8_4e_cifar10-10k.py'
STUDENT_CONFIG = REPO / 'configs' / 'demo' / 'student_resnet8_4e_cifar10-10k.py'


def data_options(root):
    options = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.dataset.data_root={root}', f'{loader}.dataset.ann_file=', f'{loader}.num_workers=0',
                    f'{loader}.persistent_workers=False', f'{loader}.batch_size=16']
    return options


def run_tool(*args):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_train_resume_test_and_export_from_the_command_line(cifar10_root, tmp_path):
    teacher = save_teacher(tmp_path / 'teacher.pth')
    work_dir = tmp_path / 'work'
    common = data_options(cifar10_root) + [f'model.teacher_ckpt={teacher}', 'default_hooks.logger.interval=1']
    log = run_tool(REPO / 'tools' / 'train.py', CONFIG, '--work-dir', work_dir,
                   '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *common)
    assert 'teacher (evaluated once before training): accuracy/top1' in log
    assert (work_dir / 'epoch_1.pth').exists()
    log = run_tool(REPO / 'tools' / 'train.py', CONFIG, '--work-dir', work_dir, '--resume',
                   '--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=1', *common)
    assert 'resumed epoch: 1' in log and (work_dir / 'epoch_2.pth').exists()
    log = run_tool(REPO / 'tools' / 'test.py', CONFIG, work_dir / 'epoch_2.pth', '--work-dir', tmp_path / 'test',
                   '--cfg-options', *common)
    assert "'accuracy/top1'" in log
    log = run_tool(REPO / 'tools' / 'export_student.py', work_dir / 'epoch_2.pth', tmp_path / 'student.pth')
    assert 'student tensors' in log
    # the export evaluates as a plain mmpretrain model, with the plain student config
    log = run_tool(REPO / 'tools' / 'test.py', STUDENT_CONFIG, tmp_path / 'student.pth', '--work-dir',
                   tmp_path / 'test_student', '--cfg-options', *data_options(cifar10_root))
    assert "'accuracy/top1'" in log


def test_model_zoo_cifar_teacher_converts_and_loads_strictly(tmp_path):
    """A checkpoint laid out like the papers' model zoo (backbone keys at the top, fc.* / classifier.*)."""
    from kdplug.adapters.mmpretrain import build_classifier
    from kdplug.distillers.teacher import load_teacher_weights
    for backbone, channels, head in (('ResNet32x4', 256, 'fc'), ('WRN40_2', 128, 'fc'), ('VGG13', 512, 'classifier')):
        cfg = dict(type='ImageClassifier', backbone=dict(type=f'kdplug.{backbone}'),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=100, in_channels=channels))
        source = build_classifier(cfg)
        zoo = {k[len('backbone.'):]: v for k, v in source.state_dict().items() if k.startswith('backbone.')}
        zoo.update({f'{head}.weight': source.head.fc.weight.detach(), f'{head}.bias': source.head.fc.bias.detach()})
        torch.save({'model': zoo, 'best_acc': 79.42}, tmp_path / 'zoo.pth')
        log = run_tool(REPO / 'tools' / 'convert_cifar_teacher.py', tmp_path / 'zoo.pth', tmp_path / 'out.pth')
        assert '100 classes' in log
        target = build_classifier(cfg)
        load_teacher_weights(target, str(tmp_path / 'out.pth'))  # strict: every key and shape must match
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key
