"""The command-line tools as a user runs them: train (with OpenMMLab's flags), resume, test, export."""
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TEST_DATA, require_detection_stack
from runner_helpers import KD_CONFIG as CONFIG, build_classifier, data_options, save_teacher

STUDENT_CONFIG = REPO / 'configs' / 'demo' / 'student_resnet8_4e_cifar10-10k.py'


def run_tool(*args):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_train_resume_test_and_export_from_the_command_line(cifar10_root, tmp_path):
    teacher = save_teacher(tmp_path / 'teacher.pth')
    work_dir = tmp_path / 'work'
    common = data_options(cifar10_root) + [f'model.teacher.checkpoint={teacher}', 'default_hooks.logger.interval=1']
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
    assert 'student tensors' in log and f'wrote {tmp_path / "student.py"}: the student\'s own config' in log
    # ... with the student's own config written beside it, made from the run's (the data options included)
    log = run_tool(REPO / 'tools' / 'test.py', tmp_path / 'student.py', tmp_path / 'student.pth', '--work-dir',
                   tmp_path / 'test_own')
    assert "'accuracy/top1'" in log
    # the export evaluates as a plain mmpretrain model, with the plain student config
    log = run_tool(REPO / 'tools' / 'test.py', STUDENT_CONFIG, tmp_path / 'student.pth', '--work-dir',
                   tmp_path / 'test_student', '--cfg-options', *data_options(cifar10_root))
    assert "'accuracy/top1'" in log


def test_model_zoo_cifar_teacher_converts_and_loads_strictly(tmp_path):
    """A checkpoint laid out like the papers' model zoo (backbone keys at the top, fc.* / classifier.*)."""
    from kdplug.teachers.checkpoint import load_teacher_weights
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


def table_rows(log: str) -> dict:
    """The rows of the markdown tables a tool printed: first cell -> the other cells."""
    rows = {}
    for line in log.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if line.startswith('|') and len(cells) > 1 and not set(cells[1]) <= set('-'):
            rows[cells[0]] = cells[1:]
    return rows


def test_benchmark_prints_a_row_for_every_loss_and_every_step(tmp_path):
    from kdplug.plugins import plugin_infos
    log = run_tool(REPO / 'tools' / 'benchmark.py', 'losses', '--repeat', '1', '--warmup', '0', '--device', 'cpu')
    rows = table_rows(log)
    assert re.search(r"USKD's ranking at N=256, C=1000: descending_order [0-9.]+ ms \([0-9.]+x KD\), "
                     r"torch.argsort\(stable\) [0-9.]+ ms", log)
    for name in (n for info in plugin_infos() for n in info.contributions.get('kdplug_losses', [])):
        assert name in rows and all(float(ms) > 0 for ms in rows[name][:3]), name
        assert float(rows[name][3].split('x')[0]) > 0, name  # the cost relative to KD's
    assert rows['KDLoss'][3] == '1.00x' and 'per temperature' in rows['MultiTempKDLoss'][3]
    rows = table_rows(run_tool(REPO / 'tools' / 'benchmark.py', 'step', '--repeat', '1', '--warmup', '0',
                               '--batch-size', '4', '--device', 'cpu'))
    steps = [what for what in rows if what.startswith('distillation step')]
    assert steps == ['distillation step, KD', 'distillation step, NormKD', 'distillation step, DKD',
                     'distillation step, KD, cached teacher']
    assert all(float(rows[what][0]) > 0 for what in rows if what != 'what')


def test_detection_benchmark_times_faster_rcnn_with_and_without_distillation(tmp_path):
    require_detection_stack()
    shutil.copytree(TEST_DATA / 'coco128', tmp_path / 'coco128')  # the few coco128 images the repository ships
    rows = table_rows(run_tool(REPO / 'tools' / 'benchmark.py', 'detection', '--repeat', '1', '--warmup', '0',
                               '--batch-size', '1', '--device', 'cpu', '--data-root', tmp_path / 'coco128'))
    assert float(rows['student alone (R-50-FPN)'][0]) > 0 and 'teacher forward (R-101-FPN, 512 RoIs)' in rows
    steps = [what for what in rows if what.startswith('distillation step')]
    assert len(steps) == 4 and all(float(rows[what][0]) > 0 for what in steps)


def test_missing_data_is_named_with_the_way_to_get_it_before_anything_is_built(cifar10_root, tmp_path):
    """A folder config before tools/prepare_data.py: the dataset's bare FileNotFoundError came after the models were
    built. A dataset that downloads itself (mmpretrain's CIFAR100) is left to do so."""
    from mmengine.config import Config

    from kdplug.tools.train import check_data
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict({f'{loader}.dataset.data_root': str(tmp_path / 'nowhere')
                         for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')})
    with pytest.raises(SystemExit, match=r"train_dataloader: the data_root '.*nowhere' does not exist. To fix: "
                                         r"prepare the data \(python tools/prepare_data.py cifar10"):
        check_data(cfg)
    # an empty list: mmengine's "need at least one array to concatenate" after the models were built
    (tmp_path / 'empty' / 'meta').mkdir(parents=True)
    (tmp_path / 'empty' / 'meta' / 'train.txt').write_text('\n')
    empty = Config.fromfile(str(CONFIG))
    empty.merge_from_dict({'train_dataloader.dataset.data_root': str(tmp_path / 'empty'),
                           'train_dataloader.dataset.ann_file': 'meta/train.txt'})
    with pytest.raises(SystemExit, match=r"train_dataloader: the ann_file '.*meta/train.txt' is empty: it lists no "
                                         r"images. To fix: write one line per image"):
        check_data(empty)
    cfg.merge_from_dict({f'{loader}.dataset.data_root': str(cifar10_root)
                         for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')})
    with pytest.raises(SystemExit, match=r"train_dataloader: the ann_file '.*meta/train_10000.txt' does not exist"):
        check_data(cfg)  # the 10k subset list: prepare_data.py writes it, this test copy has none
    cfg.merge_from_dict({f'{loader}.dataset.ann_file': '' for loader in ('train_dataloader', 'val_dataloader',
                                                                          'test_dataloader')})
    check_data(cfg)
    cifar100 = Config.fromfile(str(REPO / 'configs' / 'kd' / 'kd_resnet56_resnet20_240e_cifar100.py'))
    cifar100.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    check_data(cifar100)


@pytest.mark.parametrize('options,message', [
    ({'custom_hooks': [dict(type='kdplug.TeacherEvalHok')]},
     r"custom_hooks\[0\]: 'kdplug.TeacherEvalHok' is not in the kdplug::hook registry. Did you mean 'TeacherEvalHook'"),
    ({'custom_hooks': [dict(type='kdplug.LossWarmupHook', warmup=10, strat=3)]},
     r"custom_hooks\[0\]: kdplug.LossWarmupHook\(warmup, strat\): got an unexpected keyword argument 'strat'.*"
     r"It takes: warmup, losses, by_epoch"),
    ({'train_dataloader.dataset.pipeline.1.type': 'kdplug.ReplayRandomCrp'},
     r"train_dataloader.dataset.pipeline\[1\]: 'kdplug.ReplayRandomCrp' is not in the kdplug::transform registry. "
     r"Did you mean 'ReplayRandomCrop'"),
    ({'train_dataloader.dataset.pipeline.1.paddng': 4},
     r"pipeline\[1\]: kdplug.ReplayRandomCrop\(.*paddng\).*Did you mean 'padding' for 'paddng'"),
    ({'model.type': 'kdplug.Distiler'},
     r"model: 'kdplug.Distiler' is not in the kdplug::model registry. Did you mean 'Distiller'"),
])
def test_a_misspelt_kdplug_hook_or_transform_is_named_by_kdplug_s_registry(options, message):
    """mmengine builds engine hooks and transforms from the run's scope: its KeyError named the mmpretrain::hook
    registry, no close match, and custom_imports (which kdplug never needs); its TypeError no parameter. The tools
    check every 'kdplug.' type of the config before building anything."""
    from mmengine.config import Config

    from kdplug.tools import check_kdplug_types
    cfg = Config.fromfile(str(CONFIG))
    check_kdplug_types(cfg)
    cfg.merge_from_dict(options)
    with pytest.raises(SystemExit, match=message):
        check_kdplug_types(cfg)


def test_an_exported_student_predicts_with_mmpretrain_s_inferencer(cifar10_root, tmp_path, one_thread):
    """export_student's docstring: ImageClassificationInferencer(student_config, 'student.pth'). The inferencer loads
    the image itself and drops only transforms named LoadImageFromFile: kdplug.CachedLoadImageFromFile stayed in the
    CIFAR-10 configs' test pipeline and failed with KeyError: 'img_path'."""
    from mmpretrain.apis import ImageClassificationInferencer
    checkpoint = save_teacher(tmp_path / 'student.pth', backbone='ResNet8')
    image = next((cifar10_root / 'test').rglob('*.jpg'))
    (result,) = ImageClassificationInferencer(str(STUDENT_CONFIG), checkpoint, device='cpu')(str(image))
    assert 0 <= result['pred_label'] < 10 and len(result['pred_scores']) == 10


def test_a_launcher_started_without_its_environment_says_what_sets_it(monkeypatch):
    """tools/train.py --launcher pytorch run by hand stopped on a bare KeyError: 'RANK'."""
    from mmengine.config import Config

    from kdplug.tools.train import merge_args, parse_args
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID'):
        monkeypatch.delenv(name, raising=False)
    for launcher, said in (('pytorch', r'--launcher pytorch reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the '
                                       r'environment, which torchrun \(bash tools/dist_train.sh'),
                           ('slurm', r'--launcher slurm reads SLURM_PROCID, .* which srun')):
        with pytest.raises(SystemExit, match=said):
            merge_args(Config.fromfile(str(CONFIG)), parse_args([str(CONFIG), '--launcher', launcher]))


@pytest.mark.skipif(torch.cuda.is_available(), reason='AMP trains on a GPU')
def test_amp_without_a_gpu_is_refused_by_flag_or_by_option():
    """--cfg-options optim_wrapper.type=AmpOptimWrapper on a CPU met mmengine's bare assertion."""
    from mmengine.config import Config

    from kdplug.tools.train import merge_args, parse_args
    for argv, how in ((['--amp'], '--amp'), (['--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'],
                                            'optim_wrapper.type=AmpOptimWrapper')):
        with pytest.raises(SystemExit, match=rf"{how}: mmengine's AmpOptimWrapper needs a GPU .* train without {how}"):
            merge_args(Config.fromfile(str(CONFIG)), parse_args([str(CONFIG), *argv]))


def test_an_init_cfg_download_that_fails_names_the_cache_folder_and_init_cfg_none(cifar10_root, tmp_path):
    """Offline, a coco128 config stopped 8 s in on urllib's bare URLError from mmengine's weight initialisation."""
    from kdplug.tools.train import main as train_main
    config = tmp_path / 'offline.py'
    config.write_text(f"_base_ = ['{STUDENT_CONFIG}']\nmodel = dict(backbone=dict(init_cfg=dict(type='Pretrained', "
                      "checkpoint='http://127.0.0.1:9/resnet8.pth')))\n")  # port 9: nothing listens, refused at once
    with pytest.raises(SystemExit, match=r'a download failed \(.*\): the weights a model\'s init_cfg names .* put the '
                                         r'file in .*/checkpoints .*init_cfg=None'):
        train_main([str(config), '--work-dir', str(tmp_path / 'work'), '--cfg-options', *data_options(cifar10_root)])
