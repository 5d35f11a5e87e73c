"""OpenMMLab's tools as kdplug ships them: dist_test.sh, slurm_train.sh / slurm_test.sh, tools/test.py --out,
tools/analyze_logs.py (curves and best / last tables from scalars.json), and TensorBoard through mmengine's
visualizer."""
import importlib.util
import json
import os
import pickle
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from runner_helpers import KD_CONFIG, data_options, make_runner, run_config

TOOLS = REPO / 'tools'
# a script of tools/ (scripts there import it by name); loaded by path here, since tools/ on sys.path for the
# whole session would put tools/test.py in place of the standard library's test package
_spec = importlib.util.spec_from_file_location('analyze_logs', TOOLS / 'analyze_logs.py')
analyze_logs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(analyze_logs)

SCRIPTS = ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def bare_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith('KDPLUG_')}
    env.update(PATH=f'{REPO / ".venv" / "bin"}:{env["PATH"]}', OMP_NUM_THREADS='1', **extra)
    return env


# --- the shell scripts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('script', SCRIPTS)
def test_shell_script_parses_and_says_how_to_call_it(script):
    subprocess.run(['bash', '-n', str(TOOLS / script)], check=True)
    assert os.access(TOOLS / script, os.X_OK), f'{script} is not executable'
    if script != 'dist_train.sh':  # without arguments: a usage line and exit 2, not a bash error about $3
        result = subprocess.run(['bash', str(TOOLS / script)], capture_output=True, text=True)
        assert result.returncode == 2 and 'usage:' in result.stderr, result.stderr


@pytest.fixture
def fake_srun(tmp_path) -> Path:
    """An ``srun`` on PATH that prints the arguments it was given, one per line, and the PYTHONPATH it saw."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/usr/bin/env bash\necho "PYTHONPATH=$PYTHONPATH"\nprintf "%s\\n" "$@"\n')
    srun.chmod(0o755)
    return bin_dir


def srun_args(script: str, args: list, bin_dir: Path, **env) -> list:
    full_env = {k: v for k, v in os.environ.items() if k not in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK',
                                                                   'SRUN_ARGS', 'PYTHONPATH')}
    full_env.update(PATH=f'{bin_dir}:{full_env["PATH"]}', **env)
    result = subprocess.run(['bash', str(TOOLS / script), *args], env=full_env, capture_output=True, text=True,
                            check=True)
    return result.stdout.splitlines()


def test_slurm_train_hands_srun_mmpretrains_options_and_train_py_the_slurm_launcher(fake_srun):
    lines = srun_args('slurm_train.sh', ['gpu', 'kd-job', 'cfg.py', 'work_dirs/kd', '--amp', '--cfg-options',
                                         'a=1 b'], fake_srun, GPUS='16', SRUN_ARGS='--time=2:00:00 --qos=high')
    assert lines[0] == f'PYTHONPATH={TOOLS}/..'
    assert lines[1:9] == ['-p', 'gpu', '--job-name=kd-job', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
                          '--cpus-per-task=5', '--kill-on-bad-exit=1']
    # SRUN_ARGS split into options; the tool's arguments passed through untouched, spaces included
    assert lines[9:] == ['--time=2:00:00', '--qos=high', 'python', '-u', f'{TOOLS}/train.py', 'cfg.py',
                         '--work-dir', 'work_dirs/kd', '--launcher', 'slurm', '--amp', '--cfg-options', 'a=1 b']


def test_slurm_test_defaults_and_fewer_gpus_than_a_node(fake_srun):
    lines = srun_args('slurm_test.sh', ['dev', 'eval', 'cfg.py', 'epoch_1.pth', '--out', 'r.pkl'], fake_srun,
                      GPUS='2', CPUS_PER_TASK='3', PYTHONPATH='/elsewhere')
    assert lines[0] == f'PYTHONPATH={TOOLS}/..:/elsewhere'
    assert lines[1:] == ['-p', 'dev', '--job-name=eval', '--gres=gpu:2', '--ntasks=2', '--ntasks-per-node=2',
                         '--cpus-per-task=3', '--kill-on-bad-exit=1', 'python', '-u', f'{TOOLS}/test.py', 'cfg.py',
                         'epoch_1.pth', '--launcher', 'slurm', '--out', 'r.pkl']


# --- tools/test.py --out and dist_test.sh on a tiny distillation run -----------------------------------------------

@pytest.fixture(scope='module')
def kd_checkpoint(cifar10_root, teacher_checkpoint, tmp_path_factory, one_thread) -> Path:
    """Two KD iterations on the real images: a distillation checkpoint (student and distiller state)."""
    work_dir = tmp_path_factory.mktemp('kd_run')
    make_runner(run_config(cifar10_root, work_dir, teacher_checkpoint, max_iters=2)).train()
    return work_dir / 'iter_2.pth'


def cli_options(cifar10_root, teacher_checkpoint) -> list:
    return ['--cfg-options', *data_options(cifar10_root), f'model.teacher.checkpoint={teacher_checkpoint}']


def read_predictions(path: Path) -> list:
    with open(path, 'rb') as f:
        return pickle.load(f)


def check_predictions(predictions: list, log: str) -> None:
    """40 test images (4 per class), each with its scores and labels; their accuracy is the printed one."""
    assert len(predictions) == 40
    assert {'pred_score', 'pred_label', 'gt_label', 'img_path'} <= set(predictions[0])
    assert all(p['pred_score'].shape == (10,) for p in predictions)
    correct = sum(int(p['pred_label'][0] == p['gt_label'][0]) for p in predictions)
    printed = float(re.search(r"'accuracy/top1': ([\d.]+)", log).group(1))
    assert printed == pytest.approx(100.0 * correct / 40, abs=1e-3)


def test_test_py_out_writes_the_students_predictions(kd_checkpoint, cifar10_root, teacher_checkpoint, tmp_path):
    out = tmp_path / 'preds' / 'results.pkl'
    result = subprocess.run(
        [sys.executable, str(TOOLS / 'test.py'), str(KD_CONFIG), str(kd_checkpoint), '--work-dir',
         str(tmp_path / 'test'), '--out', str(out), *cli_options(cifar10_root, teacher_checkpoint)],
        cwd=REPO, env=bare_env(), capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    check_predictions(read_predictions(out), log)
    metrics = json.loads((tmp_path / 'preds' / 'results.metrics.json').read_text())
    assert f"'accuracy/top1': {metrics['accuracy/top1']}" in log  # the metrics printed, written beside


def test_test_py_refuses_an_out_file_that_is_no_pickle(capsys):
    main = runpy.run_path(str(TOOLS / 'test.py'), run_name='tools_test')['main']
    with pytest.raises(SystemExit) as exit_info:  # at once, before any config, model or data is loaded
        main([str(KD_CONFIG), 'missing.pth', '--out', 'results.json'])
    assert exit_info.value.code == 2 and '--out must name a .pkl' in capsys.readouterr().err


@pytest.mark.parametrize('tool,argv', [('train', []), ('test', ['x.pth']), ('cache_teacher', []),
                                       ('fit_codewords', [])])
def test_a_config_file_that_does_not_exist_is_one_line(tool, argv, tmp_path):
    """mmengine's FileNotFoundError came with a traceback."""
    main = runpy.run_path(str(TOOLS / f'{tool}.py'), run_name=f'tools_{tool}')['main']
    missing = str(tmp_path / 'kd_typo.py')
    with pytest.raises(SystemExit, match=re.escape(missing) + r': no such config file .*configs/demo/'):
        main([missing, *argv])


def test_dist_test_sh_evaluates_through_torchrun_on_one_cpu_process(kd_checkpoint, cifar10_root, teacher_checkpoint,
                                                                     tmp_path):
    """As tests/test_distributed.py runs dist_train.sh: gloo, DDP without device ids, cuda.set_device a no-op."""
    if not (REPO / '.venv' / 'bin' / 'python').exists():
        pytest.skip('runs tools/dist_test.sh with the .venv that tools/install.sh makes')
    shim = tmp_path / 'cpu_shim'
    shim.mkdir()
    (shim / 'sitecustomize.py').write_text('import torch\ntorch.cuda.set_device = lambda device: None\n')
    out = tmp_path / 'results.pkl'
    result = subprocess.run(
        ['bash', str(TOOLS / 'dist_test.sh'), str(KD_CONFIG), str(kd_checkpoint), '1', '--work-dir',
         str(tmp_path / 'test'), '--out', str(out), *cli_options(cifar10_root, teacher_checkpoint),
         'env_cfg.dist_cfg.backend=gloo', 'model_wrapper_cfg.type=MMDistributedDataParallel',
         'model_wrapper_cfg.device_ids=None'],
        cwd=REPO, env=bare_env(PYTHONPATH=str(shim), PORT=str(29500 + os.getpid() % 1000 + 7)),
        capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    check_predictions(read_predictions(out), log)


# --- tools/analyze_logs.py on hand-written scalars.json files ------------------------------------------------------

def write_log(work_dir: Path, timestamp: str, records: list) -> Path:
    path = work_dir / timestamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return path


def epoch_run(losses: list, accuracies: list, iters_per_epoch: int = 2) -> list:
    """Records as mmengine's LoggerHook writes them for an epoch-based run: the teacher's evaluation at step 0,
    training records with epoch / iter / step, a validation record after each epoch with step = epoch."""
    records = [{'teacher/accuracy/top1': 60.0, 'step': 0}]
    for epoch, accuracy in enumerate(accuracies, 1):
        for i in range(iters_per_epoch):
            it = (epoch - 1) * iters_per_epoch + i + 1
            records.append({'lr': 0.1, 'loss': losses[it - 1], 'student.loss': losses[it - 1] / 2,
                            'time': 0.1, 'epoch': epoch, 'iter': it, 'step': it})
        records.append({'accuracy/top1': accuracy, 'data_time': 0.01, 'time': 0.02, 'step': epoch})
    return records


@pytest.fixture
def two_runs(tmp_path) -> dict:
    kd = tmp_path / 'kd'
    write_log(kd, '20260101_000000', epoch_run([2.0, 1.8, 1.5, 1.4, 1.2, 1.3], [30.0, 45.5, 41.25]))
    normkd = tmp_path / 'normkd'
    first = epoch_run([2.1, 1.9, 1.6, 1.5], [28.0, 50.0])
    # interrupted after epoch 2 and resumed: epoch 2 logged again (its later value counts), then epoch 3
    write_log(normkd, '20260101_000000', first)
    resumed = [r for r in epoch_run([2.1, 1.9, 1.6, 1.45, 1.3, 1.25], [28.0, 52.0, 49.0])
               if r.get('epoch', r['step']) >= 2 and 'teacher/accuracy/top1' not in r]
    write_log(normkd, '20260101_010000', resumed)
    return {'kd': kd, 'normkd': normkd}


def test_best_last_of_each_run(two_runs):
    kd = analyze_logs.load_scalars(two_runs['kd'])
    assert analyze_logs.best_last(kd, 'accuracy/top1') == dict(best=45.5, best_at=2, last=41.25, last_at=3,
                                                               x_label='epoch')
    assert analyze_logs.best_last(kd, 'loss') == dict(best=1.2, best_at=5, last=1.3, last_at=6, x_label='iteration')
    assert analyze_logs.best_last(kd, 'loss', rule='greater')['best'] == 2.0
    assert analyze_logs.best_last(kd, 'distill.loss_kd') is None
    normkd = analyze_logs.load_scalars(two_runs['normkd'])
    assert analyze_logs.series(normkd, 'accuracy/top1') == ([1, 2, 3], [28.0, 52.0, 49.0], 'epoch')
    assert analyze_logs.series(normkd, 'loss')[:2] == ([1, 2, 3, 4, 5, 6], [2.1, 1.9, 1.6, 1.45, 1.3, 1.25])
    assert analyze_logs.best_last(normkd, 'accuracy/top1')['best'] == 52.0


def test_iteration_based_validation_is_placed_at_its_iteration(tmp_path):
    records = [{'loss': 1.0, 'iter': it, 'step': it} for it in (1, 2)] + [{'accuracy/top1': 20.0, 'step': 0}]
    records += [{'loss': 0.5, 'iter': it, 'step': it} for it in (3, 4)] + [{'accuracy/top1': 35.0, 'step': 0}]
    assert analyze_logs.series(records, 'accuracy/top1') == ([2, 4], [20.0, 35.0], 'iteration')


def test_a_line_cut_off_by_a_killed_run_is_skipped(tmp_path):
    path = write_log(tmp_path / 'run', '20260101_000000', [{'loss': 1.0, 'iter': 1, 'step': 1}])
    path.write_text(path.read_text() + '{"loss": 0.9, "it')
    assert analyze_logs.load_scalars(path) == [{'loss': 1.0, 'iter': 1, 'step': 1}]


def test_table_from_the_command_line(two_runs):
    result = subprocess.run([sys.executable, str(TOOLS / 'analyze_logs.py'), str(two_runs['kd']),
                             str(two_runs['normkd'] / '20260101_000000' / 'vis_data' / 'scalars.json'),
                             '--table', '--legend', 'KD', 'NormKD (first log)'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in result.stdout.splitlines() if line.startswith('|')}
    assert rows['run'] == ['best accuracy/top1', 'at', 'last accuracy/top1', 'at']
    assert rows['KD'] == ['45.5', 'epoch 2', '41.25', 'epoch 3']
    assert rows['NormKD (first log)'] == ['50', 'epoch 2', '50', 'epoch 2']
    misspelt = subprocess.run([sys.executable, str(TOOLS / 'analyze_logs.py'), str(two_runs['kd']), '--table',
                               '--metric', 'acuracy/top1'], capture_output=True, text=True, timeout=120)
    assert misspelt.returncode == 2 and '|' not in misspelt.stdout  # it printed a table of dashes, exit code 0
    assert '--metric acuracy/top1: no run logged it; logged: ' in misspelt.stderr and 'accuracy/top1' in misspelt.stderr


def test_curves_of_several_runs_to_png(two_runs, tmp_path):
    runs = {name: analyze_logs.load_scalars(path) for name, path in two_runs.items()}
    out = analyze_logs.plot_curves(runs, ['loss', 'student.loss', 'accuracy/top1'], tmp_path / 'plots' / 'c.png')
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    with pytest.raises(KeyError, match='logged: accuracy/top1'):
        analyze_logs.plot_curves(runs, ['accuracy/top5'], tmp_path / 'none.png')
    assert not (tmp_path / 'none.png').exists()
    result = subprocess.run([sys.executable, str(TOOLS / 'analyze_logs.py'), *map(str, two_runs.values()),
                             '--out', str(tmp_path / 'cli.png'), '--keys', 'loss', '--legend', 'only one'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and '--legend has 1 names for 2 runs' in result.stderr


def test_out_must_be_an_image_file_and_is_checked_before_the_runs_are_read(two_runs, tmp_path):
    """Without a suffix matplotlib wrote curves.png while the tool said "written to curves"; another suffix or a
    parent that is a file ended in tracebacks."""
    (tmp_path / 'afile').write_text('')
    (tmp_path / 'adir').mkdir()
    for out, said in ((tmp_path / 'curves', 'give an image file name ending in one of .png'),
                      (tmp_path / 'curves.xyz', 'give an image file name'),
                      (tmp_path / 'afile' / 'c.png', 'afile is a file'),
                      (tmp_path / 'adir.png', None)):
        if said is None:
            (tmp_path / 'adir.png').mkdir()
            said = 'adir.png is a folder'
        result = subprocess.run([sys.executable, str(TOOLS / 'analyze_logs.py'), str(two_runs['kd']), '--out',
                                 str(out)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and said in result.stderr and 'Traceback' not in result.stderr, result.stderr


# --- TensorBoard through mmengine's visualizer ---------------------------------------------------------------------

def test_tensorboard_backend_writes_events_beside_scalars_json(cifar10_root, teacher_checkpoint, tmp_path, one_thread):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]  # as docs/get_started.md shows
    cfg = run_config(cifar10_root, tmp_path / 'tb', teacher_checkpoint, max_iters=2,
                     visualizer=dict(type='UniversalVisualizer', vis_backends=backends))
    make_runner(cfg).train()
    events = sorted((tmp_path / 'tb').glob('*/vis_data/events.out.tfevents.*'))
    assert len(events) == 1
    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()['scalars']
    assert {'loss', 'distill.loss_kd', 'accuracy/top1'} <= set(tags)
    assert list((tmp_path / 'tb').glob('*/vis_data/scalars.json')), 'LocalVisBackend kept'
