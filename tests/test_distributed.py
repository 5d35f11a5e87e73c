"""tools/dist_train.sh as a user runs it (torchrun + mmengine's ``pytorch`` launcher + MMDistributedDataParallel),
with two processes on CPU over gloo.

Two things differ from a GPU run, and only these: mmengine's launcher calls ``torch.cuda.set_device(local_rank)``,
which a CPU machine cannot do (a ``sitecustomize`` on PYTHONPATH makes it a no-op in the two workers), and
DistributedDataParallel must not be given CUDA ``device_ids`` (``model_wrapper_cfg.device_ids=None``).
"""
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from runner_helpers import EMA_CONFIG, KD_CONFIG, data_options, save_teacher



def dist_train(config, work_dir, tmp_path, *options) -> str:
    shim = tmp_path / 'cpu_shim'
    shim.mkdir(exist_ok=True)
    (shim / 'sitecustomize.py').write_text('import torch\ntorch.cuda.set_device = lambda device: None\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith('KDPLUG_')}
    env.update(PATH=f'{REPO / ".venv" / "bin"}:{env["PATH"]}', PYTHONPATH=str(shim), OMP_NUM_THREADS='1',
               PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir', str(work_dir),
         '--cfg-options', 'env_cfg.dist_cfg.backend=gloo', 'model_wrapper_cfg.type=MMDistributedDataParallel',
         'model_wrapper_cfg.device_ids=None', 'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
         *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    # a checkpoint written: the run trained (the demo configs keep the last one only, epoch_1.pth goes after epoch 2;
    # the tests read the log for the rest)
    check_finished(result, done=any(Path(work_dir).glob('epoch_*.pth')))
    return log


#: What torch 2.14's gloo backend prints when it aborts a rank at interpreter exit, after the work is done (SIGABRT;
#: plain torch DDP over gloo as well, about 1 run in 15 on the 2-core machine): a run is judged by what it wrote, and
#: only this abort of a finished run is let through.
GLOO_EXIT_ABORT = 'terminate called without an active exception'


def check_finished(result: subprocess.CompletedProcess, done: bool) -> None:
    log = result.stdout + result.stderr
    if result.returncode != 0 and not (done and GLOO_EXIT_ABORT in log):
        raise AssertionError(log[-4000:])


def train_iterations(log: str) -> list:
    return [int(i) for i in re.findall(r'Epoch\(train\) \[1\]\[(\d+)/\d+\]', log)]


@pytest.fixture(scope='module', autouse=True)
def needs_the_venv():
    if not (REPO / '.venv' / 'bin' / 'python').exists():
        pytest.skip('runs tools/dist_train.sh with the .venv that tools/install.sh makes')


def test_kd_trains_on_two_processes_through_mmengines_launcher(cifar10_root, tmp_path):
    teacher = save_teacher(tmp_path / 'teacher.pth')
    work_dir = tmp_path / 'kd'
    log = dist_train(KD_CONFIG, work_dir, tmp_path, *data_options(cifar10_root), f'model.teacher.checkpoint={teacher}')
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    # 80 training images, 16 per process and step, 2 processes: 3 steps (one process alone would take 5)
    assert train_iterations(log) == [1, 2, 3]
    assert 'teacher (evaluated once before training): accuracy/top1' in log
    assert re.search(r'distill\.loss_kd: \d', log)
    state = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert any(k.startswith('student.') for k in state)
    assert not any(k.startswith('teacher') for k in state), 'the loaded teacher must stay out of the checkpoint'


def test_ema_self_teacher_is_updated_through_the_ddp_wrapper(cifar10_root, tmp_path):
    work_dir = tmp_path / 'ema'
    log = dist_train(EMA_CONFIG, work_dir, tmp_path, *data_options(cifar10_root))
    assert train_iterations(log) == [1, 2, 3]
    state = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert bool(state['teacher.started'])
    name = 'backbone.conv1.weight'
    ema, student = state[f'teacher.ema.{name}'], state[f'student.{name}']
    assert not torch.equal(ema, student), 'the EMA teacher equals the student: the hook did not reach the module'


def dist_cache(config, tmp_path, arguments: list, options: list) -> None:
    """tools/cache_teacher.py CONFIG under torchrun, two processes over gloo."""
    shim = tmp_path / 'cpu_shim'
    shim.mkdir(exist_ok=True)
    (shim / 'sitecustomize.py').write_text('import torch\ntorch.cuda.set_device = lambda device: None\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith('KDPLUG_')}
    env.update(PYTHONPATH=f'{shim}:{REPO}', OMP_NUM_THREADS='1')
    result = subprocess.run(
        [str(REPO / '.venv' / 'bin' / 'python'), '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={29500 + (os.getpid() + 7) % 1000}', str(REPO / 'tools' / 'cache_teacher.py'), str(config),
         '--launcher', 'pytorch', '--device', 'cpu', *arguments, '--cfg-options', 'env_cfg.dist_cfg.backend=gloo',
         *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    check_finished(result, done='train from it:' in result.stdout)  # the last line rank 0 prints


def test_views_mode_cache_made_in_two_processes_is_the_one_process_store(cifar10_root, tmp_path):
    """tools/cache_teacher.py --mode views under torchrun: rank r scores images r, r + 2, ... (9 images: one rank
    has one more) into one store, which holds, bit for bit, what one process writes: the logits, the views, what is
    done and each image's file and label."""
    from kdplug.teachers.cache_store import TeacherCacheStore
    from kdplug.tools.cache_teacher import main
    teacher = save_teacher(tmp_path / 'teacher.pth')
    config = REPO / 'configs' / 'demo' / 'kd-cached_resnet20_resnet8_4e_cifar10-10k.py'
    options = [*data_options(cifar10_root), 'train_dataloader.dataset.indices=9', f'model.teacher.checkpoint={teacher}']
    dist_cache(config, tmp_path, ['--out', str(tmp_path / 'two')], options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes runs (OMP_NUM_THREADS=1): the same arithmetic
    try:
        main([str(config), '--out', str(tmp_path / 'one'), '--device', 'cpu', '--cfg-options', *options])
    finally:
        torch.set_num_threads(threads)
    two, one = TeacherCacheStore.open(str(tmp_path / 'two')), TeacherCacheStore.open(str(tmp_path / 'one'))
    assert two.num_images == one.num_images == 9 and two.slots == one.slots == 162
    for name in ('logits', 'params', 'done'):
        assert np.array_equal(getattr(two, name), getattr(one, name)), name
    assert (tmp_path / 'two' / 'images.json').read_text() == (tmp_path / 'one' / 'images.json').read_text()
    assert np.abs(one.logits.astype(np.float32)).sum(-1).min() > 0  # every row written


def test_epochs_mode_cache_made_in_two_processes_serves_a_two_process_run(cifar10_root, tmp_path):
    """tools/cache_teacher.py --mode epochs under torchrun: each rank scores the views its shard of every epoch
    draws; a two-process run with the same seed finds every view (the cached teacher stops at the first it lacks).
    79 images over 2 ranks: the sampler pads each epoch with one image drawn twice, which gets a slot of its own. A
    one-process run is refused at build with the number of processes the store was made for."""
    from mmengine.config import Config

    from kdplug.teachers.cache_store import TeacherCacheError, TeacherCacheStore
    from runner_helpers import make_runner
    teacher = save_teacher(tmp_path / 'teacher.pth')
    store = tmp_path / 'store'
    config = REPO / 'configs' / 'demo' / 'kd-cached_resnet20_resnet8_4e_cifar10-10k.py'
    options = [*data_options(cifar10_root), 'train_dataloader.dataset.indices=79', 'randomness.seed=7',
               f'model.teacher.checkpoint={teacher}', f'model.teacher.store={store}']
    dist_cache(config, tmp_path, ['--mode', 'epochs', '--epochs', '2'], options)
    made = TeacherCacheStore.open(str(store))
    assert made.header['world_size'] == 2 and made.slots == 2 * 2 and made.done.all()
    written = (np.abs(made.logits.reshape(79, 4, -1).astype(np.float32)).sum(-1) > 0).sum(1)  # rows per image
    assert (written >= 2).all() and written.sum() == 2 * 80  # both epochs of every image; 80 draws per epoch

    log = dist_train(config, tmp_path / 'run', tmp_path, *options, 'train_cfg.max_epochs=2')
    assert re.search(r'distill\.loss_kd: \d', log) and 'Epoch(train) [2][3/3]' in log

    cfg = Config.fromfile(str(config))
    cfg.model.teacher.update(checkpoint=teacher, store=str(store))
    cfg.work_dir = str(tmp_path / 'one')
    with pytest.raises(TeacherCacheError, match=r'run in 2 process\(es\).*this run has 1'):
        make_runner(cfg)
