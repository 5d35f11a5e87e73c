"""No code runs from a checkpoint: crafted files are refused on every path kdplug loads, even after a genuine
mmengine checkpoint (message hub with history buffers) was loaded in the same process."""
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import REPO
from runner_helpers import KD_CONFIG, data_options, make_runner, run_config


class Call:
    """Pickles as ``func(*args)``: the building block of a crafted checkpoint."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def shell(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def payloads(marker: Path) -> dict:
    """Crafted checkpoints, each trying to run ``touch marker``."""
    from mmengine.logging import HistoryBuffer
    from torch._tensor import _rebuild_from_type_v2
    from torch._utils import _rebuild_tensor_v2
    builtin_type = Call(getattr, getattr, '__class__')  # type(eval): the type check of _rebuild_from_type_v2
    builtins = Call(getattr, _rebuild_tensor_v2, '__builtins__')
    evaluate = Call(_rebuild_from_type_v2, Call(getattr, builtins, 'get'), builtin_type, ('eval',), {})
    return {
        # the classic: plain __reduce__ to os.system
        'reduce': {'state_dict': Call(os.system, f'touch {marker}')},
        # getattr + torch's own _rebuild_from_type_v2 (which calls its first argument) -> builtins.eval
        'getattr-chain': {'state_dict': {'w': torch.zeros(1)},
                          'meta': Call(_rebuild_from_type_v2, evaluate, builtin_type, (shell(marker),), {})},
        # the restricted getattr asked for something other than HistoryBuffer's statistics methods
        'history-buffer-init': {'meta': Call(getattr, HistoryBuffer, '__init__')},
        'history-buffer-globals': {'meta': Call(getattr, Call(getattr, HistoryBuffer, 'min'), '__globals__')},
        'history-buffer-class': {'meta': Call(getattr, HistoryBuffer, '__class__')},
        # numpy's array rebuild asked for a type that is not an ndarray
        'numpy-reconstruct': {'meta': Call(_numpy_reconstruct(), HistoryBuffer, (0,), b'b')},
    }


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def genuine_mmengine_checkpoint(tmp_path: Path, cifar10_root, teacher_checkpoint) -> Path:
    """A real run checkpoint: the message hub holds HistoryBuffers (pickled with getattr(HistoryBuffer, 'min'))."""
    runner = make_runner(run_config(cifar10_root, tmp_path / 'genuine', teacher_checkpoint, max_iters=2))
    runner.train()
    return tmp_path / 'genuine' / 'iter_2.pth'


def test_the_real_getattr_is_never_allowed_and_a_genuine_checkpoint_still_loads(cifar10_root, teacher_checkpoint,
                                                                                 tmp_path, one_thread):
    from mmengine.logging import HistoryBuffer
    from kdplug.engine.checkpoint import load_checkpoint_file
    path = genuine_mmengine_checkpoint(tmp_path, cifar10_root, teacher_checkpoint)
    loaded = load_checkpoint_file(str(path), role='distillation run')
    buffers = loaded['message_hub']['log_scalars']
    assert buffers and all(isinstance(b, HistoryBuffer) for b in buffers.values())
    assert getattr not in torch.serialization.get_safe_globals()
    assert torch.load(path, weights_only=True)['meta']['iter'] == 2  # mmengine's own load path (resume)


@pytest.mark.parametrize('name', ['reduce', 'getattr-chain', 'history-buffer-init', 'history-buffer-globals',
                                  'history-buffer-class', 'numpy-reconstruct'])
def test_crafted_checkpoints_are_refused_in_process(name, cifar10_root, teacher_checkpoint, tmp_path, one_thread):
    """After a genuine mmengine checkpoint was loaded (the allow-list is process-wide), on kdplug's loader and on
    the plain torch.load that mmengine's resume / load_from use."""
    from kdplug.engine.checkpoint import load_checkpoint_file
    from kdplug.letkd.io import load_codewords_file
    load_checkpoint_file(str(genuine_mmengine_checkpoint(tmp_path, cifar10_root, teacher_checkpoint)), 'run')
    marker = tmp_path / 'pwned'
    path = tmp_path / f'{name}.pth'
    torch.save(payloads(marker)[name], path)
    refused = 'refused by the weights-only loader|First argument must be a sub-type of ndarray'  # numpy's own check
    with pytest.raises(RuntimeError, match=refused):
        load_checkpoint_file(str(path), role='teacher')
    with pytest.raises(RuntimeError, match=refused):
        load_codewords_file(str(path))
    with pytest.raises(Exception):
        torch.load(path)  # what mmengine's CheckpointLoader calls
    assert not marker.exists()


def test_the_getattr_chain_would_run_code_with_the_real_getattr(tmp_path):
    """The test above is not vacuous: with builtins.getattr allowed (kdplug's old list), the chain runs code."""
    marker = tmp_path / 'pwned'
    path = tmp_path / 'chain.pth'
    torch.save(payloads(marker)['getattr-chain'], path)
    code = textwrap.dedent(f'''
        import torch
        torch.serialization.add_safe_globals([getattr])
        try:
            torch.load({str(path)!r}, weights_only=True)
        except Exception:
            pass''')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
    assert marker.exists()


def run_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_every_tool_refuses_a_crafted_checkpoint(cifar10_root, teacher_checkpoint, tmp_path):
    """model.teacher.checkpoint, --resume, load_from, tools/test.py and tools/export_student.py, each in a fresh
    process."""
    marker = tmp_path / 'pwned'
    crafted = tmp_path / 'crafted.pth'
    torch.save(payloads(marker)['getattr-chain'], crafted)
    train = [REPO / 'tools' / 'train.py', KD_CONFIG, '--work-dir', tmp_path / 'work']
    options = ['--cfg-options', 'train_cfg.max_epochs=1', *data_options(cifar10_root)]
    teacher = f'model.teacher.checkpoint={teacher_checkpoint}'
    runs = {
        'teacher': run_tool(*train, *options, f'model.teacher.checkpoint={crafted}'),
        'resume': run_tool(*train, '--resume', crafted, *options, teacher),
        'load_from': run_tool(*train, *options, teacher, f'load_from={crafted}'),
        'test': run_tool(REPO / 'tools' / 'test.py', KD_CONFIG, crafted, '--work-dir', tmp_path / 'test',
                         *options, teacher),
        'export': run_tool(REPO / 'tools' / 'export_student.py', crafted, tmp_path / 'student.pth'),
    }
    for path, result in runs.items():
        assert result.returncode != 0, path
        assert 'Weights only load failed' in result.stderr or 'refused' in result.stderr, (path, result.stderr[-2000:])
    assert not marker.exists()


@pytest.mark.parametrize('make,message', [
    (lambda p: p.mkdir(), r'is a directory, not a checkpoint file'),
    (lambda p: p.write_bytes(b''), r'is empty \(0 bytes\): its write was interrupted'),
    (lambda p: p.write_bytes(ZIP_PREFIX), r'is truncated or corrupt'),
    (lambda p: p.write_bytes(b'not a checkpoint at all'), r"is not a torch checkpoint \(it starts with b'not '"),
    (lambda p: p.write_bytes(b'\x80\x02' + os.urandom(200)), r'could not be read .*not a torch checkpoint'),
])
def test_broken_checkpoint_files_get_messages_that_name_the_problem(tmp_path, make, message):
    from kdplug.engine.checkpoint import load_checkpoint_file
    path = tmp_path / 'teacher.pth'
    make(path)
    with pytest.raises(RuntimeError, match=rf"teacher checkpoint '{path}' {message}"):
        load_checkpoint_file(str(path), role='teacher')


ZIP_PREFIX = b'PK\x03\x04' + bytes(60)


def test_export_never_writes_over_the_checkpoint_it_exports(tmp_path):
    """``export_student.py run.pth run.pth`` replaced the run's checkpoint (optimizer, teacher, training state) with
    the student; an export is written whole or not at all."""
    from kdplug.distillers.export import export_student
    run = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'student.w': torch.ones(2), 'teacher.ema.w': torch.ones(2)}, 'optimizer': {}}, run)
    before = run.read_bytes()
    with pytest.raises(ValueError, match='is the checkpoint to export: writing the student there would replace'):
        export_student(str(run), str(tmp_path / '.' / 'epoch_1.pth'))
    assert run.read_bytes() == before
    export_student(str(run), str(tmp_path / 'student.pth'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth', 'student.pth']
    assert list(torch.load(tmp_path / 'student.pth', weights_only=True)['state_dict']) == ['w']


def test_export_replaces_only_files_an_export_wrote(tmp_path):
    """Named after the run's config, an export replaced the config mmengine dumped into the work dir (a user's own
    config the same way); given a folder, the tool stopped on [Errno 21] and left a .partial file."""
    run = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'student.w': torch.ones(2)}, 'optimizer': {}}, run)
    (tmp_path / 'kd.py').write_text('model = dict(type="Distiller")\n')
    (tmp_path / 'other.pth').write_bytes(run.read_bytes())
    tool = REPO / 'tools' / 'export_student.py'
    for out in ('kd.pth', 'other.pth'):
        refused = run_tool(tool, run, tmp_path / out, '--no-config' if out == 'other.pth' else '--config',
                           *(() if out == 'other.pth' else (REPO / 'configs' / 'demo' / KD_CONFIG_NAME,)))
        assert refused.returncode != 0 and 'Traceback' not in refused.stderr
        name = 'kd.py' if out == 'kd.pth' else 'other.pth'
        assert f"'{tmp_path / name}' exists and is not a file an export wrote" in refused.stderr and \
            '--force' in refused.stderr
    assert (tmp_path / 'kd.py').read_text() == 'model = dict(type="Distiller")\n'
    assert not (tmp_path / 'kd.pth').exists() and not list(tmp_path.glob('*.partial'))
    # an export replaces its own files, and --force any file
    folder = tmp_path / 'export'
    folder.mkdir()
    config = ('--config', REPO / 'configs' / 'demo' / KD_CONFIG_NAME)
    for _ in range(2):
        again = run_tool(tool, run, folder, *config)
        assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in folder.iterdir()) == ['student.pth', 'student.py']
    assert (folder / 'student.py').read_text().startswith("# The student's own config, written by kdplug's")
    forced = run_tool(tool, run, tmp_path / 'kd.pth', '--force', *config)
    assert forced.returncode == 0 and (tmp_path / 'kd.py').read_text().startswith('# The student')


KD_CONFIG_NAME = 'kd_resnet20_resnet8_4e_cifar10-10k.py'


def test_export_tool_messages_are_plain_sentences(tmp_path):
    plain = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'backbone.w': torch.zeros(1)}}, plain)
    missing = run_tool(REPO / 'tools' / 'export_student.py', tmp_path / 'nope.pth', tmp_path / 'out.pth')
    assert missing.returncode != 0 and 'Traceback' not in missing.stderr
    assert f"distillation run checkpoint '{tmp_path / 'nope.pth'}' does not exist: check the path" in missing.stderr
    no_config = run_tool(REPO / 'tools' / 'export_student.py', plain, tmp_path / 'out.pth')
    assert no_config.returncode != 0 and 'Traceback' not in no_config.stderr
    assert 'holds no config' in no_config.stderr and '--no-config for the weights alone' in no_config.stderr


def test_a_plain_run_s_checkpoint_exports_to_weights_the_libraries_load(tmp_path):
    """mmdet's init_detector and DetInferencer could not load a teacher run's checkpoint (torch's weights-only load
    refuses mmengine's HistoryBuffer in its message hub), and export_student.py refused it as needing no export."""
    from mmengine.logging import MessageHub
    run = tmp_path / 'iter_3.pth'
    hub = MessageHub.get_instance('a_plain_run')
    hub.update_scalar('train/loss', 1.0)
    torch.save({'state_dict': {'backbone.w': torch.ones(2)}, 'optimizer': {}, 'message_hub': hub.state_dict(),
                'meta': {'epoch': 0, 'iter': 3, 'cfg': "model = dict(type='ImageClassifier')\nwork_dir = 'x'\n"}},
               run)
    exported = run_tool(REPO / 'tools' / 'export_student.py', run, tmp_path / 'teacher.pth')
    assert exported.returncode == 0, exported.stderr
    loads = subprocess.run([sys.executable, '-c', 'import sys, torch; w = torch.load(sys.argv[1], weights_only=True); '
                            'print(list(w["state_dict"]), w["meta"]["iter"])', str(tmp_path / 'teacher.pth')],
                           capture_output=True, text=True, timeout=120)  # a fresh process: torch's own allow-list
    assert loads.stdout.strip() == "['backbone.w'] 3", loads.stderr
    config = (tmp_path / 'teacher.py').read_text()
    assert "type='ImageClassifier'" in config and 'work_dir' not in config


STUDENT_CONFIG = REPO / 'configs' / 'demo' / 'student_resnet8_4e_cifar10-10k.py'


def test_tools_name_a_missing_or_foreign_checkpoint_before_building_anything(tmp_path, capsys):
    """tools/test.py's checkpoint and tools/train.py's load_from / --resume: a missing file, random bytes or text
    is named at once (mmengine's own loader said "can not be found" or, for random bytes, advised loading with
    weights_only=False)."""
    from kdplug.tools.test import main as test_main
    from kdplug.tools.train import main as train_main
    (tmp_path / 'random.pth').write_bytes(os.urandom(2000).replace(b'PK', b'pk').replace(b'\x80', b'\x81'))
    (tmp_path / 'notes.pth').write_text('epoch 240: 76.3%')
    for name, reason in (('missing.pth', 'does not exist'), ('random.pth', 'is not a torch checkpoint'),
                         ('notes.pth', "is not a torch checkpoint \\(it starts with b'epoc'")):
        path = str(tmp_path / name)
        with pytest.raises(SystemExit):
            test_main([str(STUDENT_CONFIG), path])
        assert f'the checkpoint {path} {reason.replace(chr(92), "")}' in capsys.readouterr().err
        with pytest.raises(SystemExit, match=f'load_from {path}: the checkpoint {reason}'):
            train_main([str(STUDENT_CONFIG), '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                        f'load_from={path}'])
        with pytest.raises(SystemExit, match=f'--resume {path}: the checkpoint {reason}'):
            train_main([str(STUDENT_CONFIG), '--work-dir', str(tmp_path / 'work'), '--resume', path])


def test_test_py_refuses_a_checkpoint_of_another_model_instead_of_scoring_a_random_head(cifar10_root, tmp_path,
                                                                                       one_thread):
    """A 100-class resnet8 given to the 10-class student config: mmengine's load is not strict (its log only warns),
    so the head stayed random and tools/test.py printed that head's accuracy. The same file of the right class count
    evaluates."""
    from runner_helpers import save_teacher

    from kdplug.tools.test import main as test_main
    options = ['--work-dir', str(tmp_path / 'test'), '--cfg-options', *data_options(cifar10_root)]
    other = save_teacher(tmp_path / 'resnet8_100.pth', backbone='ResNet8', num_classes=100)
    with pytest.raises(SystemExit, match=r'(?s)the checkpoint .*resnet8_100.pth does not fit the model of '
                                         r'.*student_resnet8.*size mismatch for head.fc.weight.*configs/students/'):
        test_main([str(STUDENT_CONFIG), other, *options])
    test_main([str(STUDENT_CONFIG), save_teacher(tmp_path / 'resnet8_10.pth', backbone='ResNet8'), *options])


def test_a_checkpoint_url_that_cannot_be_downloaded_names_the_file_and_the_fix(monkeypatch):
    """The detection configs' teachers are URLs: offline, urllib's bare URLError named neither the file nor what to
    set instead."""
    import urllib.error

    from kdplug.engine.checkpoint import load_checkpoint_file

    def offline(*args, **kwargs):
        raise urllib.error.URLError('[Errno -2] Name or service not known')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', offline)
    url = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/r101.pth'
    with pytest.raises(RuntimeError, match=r"teacher checkpoint 'https://download.openmmlab.com/.*r101.pth' could not "
                                           r"be downloaded \(URLError: .*Name or service not known.*\). Download it "
                                           r"where the network is reachable and set model.teacher.checkpoint"):
        load_checkpoint_file(url, role='teacher')


def trained_run(cifar10_root, teacher_checkpoint, tmp_path) -> tuple:
    """A 2-iteration distillation run from a copy of the teacher: (its config dumped as run.py, its iter_2.pth, the
    teacher copy); no teacher evaluation."""
    import shutil
    teacher = tmp_path / 'teacher.pth'
    shutil.copy(teacher_checkpoint, teacher)
    cfg = run_config(cifar10_root, tmp_path / 'run', str(teacher), max_iters=2)
    cfg.custom_hooks = [hook for hook in cfg.get('custom_hooks', []) if 'TeacherEvalHook' not in str(hook.type)]
    make_runner(cfg).train()
    cfg.dump(str(tmp_path / 'run.py'))
    return tmp_path / 'run.py', tmp_path / 'run' / 'iter_2.pth', teacher


def test_test_py_says_a_distillation_checkpoint_given_with_the_student_s_config_is_to_be_exported(
        cifar10_root, teacher_checkpoint, tmp_path, one_thread):
    """The student's config with a run's checkpoint: ten kilobytes of missing and unexpected keys came before the
    advice."""
    from kdplug.tools.test import main as test_main
    _, checkpoint, _ = trained_run(cifar10_root, teacher_checkpoint, tmp_path)
    with pytest.raises(SystemExit) as refused:
        test_main([str(STUDENT_CONFIG), str(checkpoint), '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                   *data_options(cifar10_root)])
    message = str(refused.value)
    assert re.search(r"it is a distillation run's checkpoint \(its weights are named student\.\*\) .* export the "
                     r'student first \(python tools/export_student.py .*iter_2.pth student.pth\)', message), message
    assert len(message) < 2500


def test_test_py_evaluates_a_distillation_checkpoint_without_its_teacher(cifar10_root, teacher_checkpoint, tmp_path,
                                                                         one_thread, capsys):
    """tools/test.py loaded the teacher's checkpoint to evaluate the student: a run's checkpoint copied without its
    teacher stopped with "Train the teacher first", and the detection configs downloaded an R-101 to test an R-50."""
    from kdplug.tools.test import main as test_main
    config, checkpoint, teacher = trained_run(cifar10_root, teacher_checkpoint, tmp_path)
    teacher.unlink()
    test_main([str(config), str(checkpoint), '--work-dir', str(tmp_path / 'test')])
    assert "'accuracy/top1':" in capsys.readouterr().out


@pytest.mark.parametrize('scope, hook, switch, folder', [
    ('mmpretrain', 'VisualizationHook', 'enable', 'out_dir'),
    ('mmdet', 'DetVisualizationHook', 'draw', 'test_out_dir'),
    ('mmseg', 'SegVisualizationHook', 'draw', None),  # mmseg draws into the visualizer's save_dir
])
def test_show_dir_turns_on_each_library_s_visualization_hook(scope, hook, switch, folder):
    """mmpretrain's, mmdet's and mmseg's tools/test.py --show-dir, each with its hook's own switch and folder."""
    from mmengine.config import Config

    from kdplug.tools.test import draw_predictions
    cfg = Config(dict(default_scope=scope, default_hooks=dict(visualization=dict(type=hook)),
                      visualizer=dict(type='Visualizer')))
    draw_predictions(cfg, 'vis', show=False, wait_time=2.0, interval=1, error=pytest.fail)
    drawn = cfg.default_hooks.visualization
    assert drawn[switch] is True and drawn.interval == 1 and 'show' not in drawn
    assert (drawn[folder] if folder else cfg.visualizer.save_dir) == 'vis'


def test_show_dir_draws_the_test_predictions(cifar10_root, tmp_path, one_thread, capsys):
    """Every test image is drawn; where two share a file name (class folders of 0000.jpg ...: mmpretrain's hook
    names drawings after the file name alone) the tool says that drawings were replaced."""
    from runner_helpers import save_teacher

    from kdplug.tools.test import main as test_main
    checkpoint = save_teacher(tmp_path / 'resnet8.pth', backbone='ResNet8')
    options = ['--work-dir', str(tmp_path / 'test'), '--cfg-options', *data_options(cifar10_root)]
    test_main([str(STUDENT_CONFIG), checkpoint, '--show-dir', str(tmp_path / 'all'), *options])
    assert len(list((tmp_path / 'all').glob('*.png'))) == 4  # 40 images, 10 folders of 0000.jpg ... 0003.jpg
    assert f'warning: 40 test samples were drawn into 4 files of {tmp_path / "all"}' in capsys.readouterr().err
    # one image per file name: every drawing kept, no warning
    test_main([str(STUDENT_CONFIG), checkpoint, '--show-dir', str(tmp_path / 'unique'), *options,
               'test_dataloader.dataset.indices=[0, 1, 2, 3]'])
    assert len(list((tmp_path / 'unique').glob('*.png'))) == 4 and 'warning' not in capsys.readouterr().err


def test_metrics_of_every_library_are_written_as_json_numbers():
    """mmseg's metrics are numpy float32: --out wrote {"mIoU": "16.94"}."""
    import numpy as np

    from kdplug.tools.test import json_metrics
    assert json_metrics({'mIoU': np.float32(16.94), 'accuracy/top1': 71.5, 'n': 3, 'classes': ('a', 'b')}) == \
        {'mIoU': pytest.approx(16.94), 'accuracy/top1': 71.5, 'n': 3.0, 'classes': "('a', 'b')"}


def test_tta_averages_each_image_and_its_flip_for_a_student_and_a_distillation_run(cifar10_root, teacher_checkpoint,
                                                                                  tmp_path, one_thread, capsys):
    """mmpretrain's --tta: the model inside AverageClsScoreTTA, the pipeline ending in TestTimeAug (flipped, not);
    the checkpoint still loads strictly (mmengine unwraps the TTA model), the teacher is still not read."""

    from mmengine.config import Config

    from kdplug.tools.test import main as test_main
    from kdplug.tools.test import with_test_time_augmentation
    cfg = Config.fromfile(str(STUDENT_CONFIG))
    with_test_time_augmentation(cfg, pytest.fail)
    assert cfg.model.type == 'mmpretrain.AverageClsScoreTTA' and cfg.model.module.type == 'ImageClassifier'
    assert cfg.test_dataloader.dataset.pipeline[-1].type == 'TestTimeAug'
    assert cfg.val_dataloader.dataset.pipeline[-1].type == 'PackInputs'  # validation keeps its pipeline
    with pytest.raises(SystemExit, match="--tta: the config has no tta_model and tta_pipeline, and mmseg's test tool "
                                         'has no default'):
        with_test_time_augmentation(Config(dict(default_scope='mmseg', model=dict(type='EncoderDecoder'))),
                                    lambda message: (_ for _ in ()).throw(SystemExit(message)))

    config, checkpoint, teacher = trained_run(cifar10_root, teacher_checkpoint, tmp_path)
    teacher.unlink()
    test_main([str(config), str(checkpoint), '--tta', '--work-dir', str(tmp_path / 'test')])
    assert "'accuracy/top1':" in capsys.readouterr().out


def test_test_py_takes_mmpretrains_out_item_amp_and_no_pin_memory(cifar10_root, teacher_checkpoint, tmp_path,
                                                                  one_thread, capsys):
    """mmpretrain's test.py flags: --out-item metrics writes the metrics to --out (JSON here; it refused any file
    but a pickle), --out-item pred the predictions only; --amp (test_cfg.fp16) and --no-pin-memory were unknown."""
    from kdplug.tools.test import main as test_main
    config, checkpoint, _ = trained_run(cifar10_root, teacher_checkpoint, tmp_path)
    plain = tmp_path / 'plain.json'
    test_main([str(config), str(checkpoint), '--work-dir', str(tmp_path / 'test'), '--out', str(plain),
               '--out-item', 'metrics', '--no-pin-memory'])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(plain.read_text())
    assert f"'accuracy/top1': {metrics['accuracy/top1']}" in printed
    test_main([str(config), str(checkpoint), '--work-dir', str(tmp_path / 'test'), '--amp', '--out',
               str(tmp_path / 'amp.pkl'), '--out-item', 'pred'])
    assert "'accuracy/top1':" in capsys.readouterr().out
    assert len(pickle.loads((tmp_path / 'amp.pkl').read_bytes())) == 40
    assert not (tmp_path / 'amp.metrics.json').exists()  # predictions only
    for argv, said in ((['--out-item', 'metrics'], '--out-item needs --out'),
                       (['--out', 'm.txt', '--out-item', 'metrics'],
                        '--out with --out-item metrics must name a .json')):
        with pytest.raises(SystemExit):
            test_main([str(config), str(checkpoint), *argv])
        assert said in capsys.readouterr().err


def test_an_exported_student_tests_with_the_distillation_config(cifar10_root, teacher_checkpoint, tmp_path, one_thread,
                                                                capsys):
    """letKD's student keeps its KD layers and no student-only config of it is shipped: the exported student was
    refused with every config at hand. Given the distillation config, test.py evaluates it as that config's student
    (the same top-1 as the run's checkpoint); a file that does not fit is named."""

    from kdplug.distillers.export import export_student
    from kdplug.tools.test import main as test_main
    config, checkpoint, _ = trained_run(cifar10_root, teacher_checkpoint, tmp_path)
    export_student(str(checkpoint), str(tmp_path / 'student.pth'))
    scores = []
    for weights in (checkpoint, tmp_path / 'student.pth'):
        test_main([str(config), str(weights), '--work-dir', str(tmp_path / 'test')])
        scores.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores[0] == scores[1] and "'accuracy/top1':" in scores[0]
    other = save_teacher_like(tmp_path)
    with pytest.raises(SystemExit, match=r'the exported student .*other.pth does not fit the student of .*run.py'):
        test_main([str(config), other, '--work-dir', str(tmp_path / 'test')])


def save_teacher_like(tmp_path) -> str:
    """An exported-student file of another model (a resnet20's weights)."""
    from runner_helpers import save_teacher
    weights = torch.load(save_teacher(tmp_path / 'r20.pth'), weights_only=False)['state_dict']
    torch.save({'state_dict': weights, 'meta': {'exported_from': 'elsewhere.pth'}}, tmp_path / 'other.pth')
    return str(tmp_path / 'other.pth')
