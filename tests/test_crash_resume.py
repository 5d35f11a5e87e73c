"""Runs survive a crash at any moment: a kill during a checkpoint write loses at most the epoch being written,
and --resume takes the newest intact checkpoint, or says clearly that there is nothing to resume."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO
from runner_helpers import KD_CONFIG, data_options, load_tool, make_runner

# Kill the process (SIGKILL: no cleanup, as a preempted job or an OOM kill) half-way through writing the checkpoint
# of the second epoch, after half of its bytes reached the disk.
KILL_DURING_SECOND_CHECKPOINT = textwrap.dedent('''
    import os, signal
    from mmengine.fileio.backends import local_backend
    _put, _calls = local_backend.LocalBackend.put, []
    def put(self, obj, filepath):
        if '.pth' in str(filepath):
            _calls.append(filepath)
            if len(_calls) == 2:
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        return _put(self, obj, filepath)
    local_backend.LocalBackend.put = put
''')


def train(work_dir, cifar10_root, teacher_checkpoint, *extra, env=None, hook='kdplug.AtomicCheckpointHook'):
    options = ['train_cfg.max_epochs=3', 'train_cfg.val_interval=3', f'model.teacher.checkpoint={teacher_checkpoint}',
               f'default_hooks.checkpoint.type={hook}', 'default_hooks.checkpoint.interval=1',
               'default_hooks.checkpoint.max_keep_ckpts=1', 'default_hooks.checkpoint.save_best=None',
               *data_options(cifar10_root), 'train_dataloader.dataset.indices=16']
    return subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'), str(KD_CONFIG), '--work-dir',
                           str(work_dir), *extra, '--cfg-options', *options], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture
def killer(tmp_path):
    folder = tmp_path / 'killer'
    folder.mkdir()
    (folder / 'sitecustomize.py').write_text(KILL_DURING_SECOND_CHECKPOINT)
    return {'PYTHONPATH': f'{folder}{os.pathsep}{os.environ.get("PYTHONPATH", "")}'}


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(cifar10_root, teacher_checkpoint,
                                                                               tmp_path, killer):
    work = tmp_path / 'work'
    killed = train(work, cifar10_root, teacher_checkpoint, env=killer)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']  # kept: the new one was not complete
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    resumed = train(work, cifar10_root, teacher_checkpoint, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'--resume: resuming from {work / "epoch_1.pth"}' in resumed.stdout
    assert 'resumed epoch: 1' in resumed.stdout + resumed.stderr
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_3.pth']  # max_keep_ckpts=1, pruned after writing
    assert torch.load(work / 'epoch_3.pth', weights_only=True)['meta']['epoch'] == 3


def test_mmengine_checkpoint_hook_alone_loses_the_run_there(cifar10_root, teacher_checkpoint, tmp_path, killer):
    """Why kdplug's configs use AtomicCheckpointHook: mmengine's deletes the old checkpoint first."""
    work = tmp_path / 'work'
    killed = train(work, cifar10_root, teacher_checkpoint, env=killer, hook='CheckpointHook')
    assert killed.returncode == -9
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_2.pth']  # truncated; epoch_1 already deleted
    resumed = train(work, cifar10_root, teacher_checkpoint, '--resume', hook='CheckpointHook')
    assert 'nothing to resume' in resumed.stdout and 'epoch_1.pth, which does not exist' in resumed.stdout


def train_tool():
    return load_tool('train')


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    tool = train_tool()
    torch.save({'meta': {'epoch': 1}}, tmp_path / 'epoch_1.pth')
    torch.save({'meta': {'epoch': 2}}, tmp_path / 'epoch_2.pth')
    os.utime(tmp_path / 'epoch_1.pth', (1, 1))
    full = (tmp_path / 'epoch_2.pth').read_bytes()
    (tmp_path / 'epoch_3.pth').write_bytes(full[:len(full) // 2])  # an interrupted write
    (tmp_path / 'last_checkpoint').write_text('')  # an interrupted write of the pointer
    checkpoint, note = tool.resumable_checkpoint(str(tmp_path))
    assert checkpoint == str(tmp_path / 'epoch_2.pth')
    assert 'last_checkpoint is empty' in note and 'newest intact checkpoint' in note
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    checkpoint, note = tool.resumable_checkpoint(str(tmp_path))
    assert checkpoint == str(tmp_path / 'epoch_2.pth') and 'epoch_3.pth, which is truncated' in note


def test_resume_falls_back_to_the_highest_epoch_not_the_newest_file(tmp_path):
    """A work dir copied with cp -r has the copy's times: epoch_2.pth came out older than epoch_1.pth, and the run
    resumed from epoch 1 and repeated epoch 2."""
    for epoch, mtime in ((1, 200), (2, 100), (10, 150)):
        torch.save({'meta': {'epoch': epoch}}, tmp_path / f'epoch_{epoch}.pth')
        os.utime(tmp_path / f'epoch_{epoch}.pth', (mtime, mtime))
    (tmp_path / 'epoch_10.pth').write_bytes(b'')  # truncated
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_10.pth'))
    checkpoint, _ = train_tool().resumable_checkpoint(str(tmp_path))
    assert checkpoint == str(tmp_path / 'epoch_2.pth')


def test_load_from_the_students_own_weights_loads_them_into_the_student(cifar10_root, teacher_checkpoint,
                                                                          tmp_path):
    """load_from with an exported student or a run of the student's config (keys without "student."): mmengine's
    non-strict load matched no key and the run trained from scratch, exit code 0. Now the student gets them; a
    checkpoint of another model stops the run."""
    from mmengine.runner import Runner

    from kdplug.tools.train import load_student_weights_into_the_student
    from runner_helpers import run_config, save_teacher
    student = save_teacher(tmp_path / 'student.pth', backbone='ResNet8', seed=3)
    weights = torch.load(student)['state_dict']
    runner = Runner.from_cfg(run_config(cifar10_root, tmp_path / 'work', teacher_checkpoint,
                                        experiment_name='load_from_student'))
    load_student_weights_into_the_student(runner)
    runner.load_checkpoint(student)
    loaded = runner.model.student.state_dict()
    assert weights.keys() == loaded.keys()
    assert all(torch.equal(weights[key], loaded[key]) for key in weights)
    torch.save({'state_dict': {'conv.weight': torch.ones(2)}}, tmp_path / 'other.pth')
    with pytest.raises(SystemExit, match=r"load_from .*other.pth: none of its 1 weights \(e.g. \['conv.weight'\]\) "
                                         r"is the distiller's \(student.\*\) or its student's"):
        runner.load_checkpoint(str(tmp_path / 'other.pth'))


def test_resume_takes_a_run_s_own_checkpoints_only(tmp_path):
    """A best_*.pth (no optimizer or scheduler state: the schedule would restart) and an exported student (no run
    at all) are newer than the last epoch's checkpoint, which the pointer no longer names: neither is resumed."""
    torch.save({'meta': {'epoch': 2}}, tmp_path / 'epoch_2.pth')
    os.utime(tmp_path / 'epoch_2.pth', (1, 1))
    torch.save({'state_dict': {}}, tmp_path / 'best_accuracy_top1_epoch_2.pth')
    torch.save({'state_dict': {}}, tmp_path / 'student.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_9.pth'))
    checkpoint, note = train_tool().resumable_checkpoint(str(tmp_path))
    assert checkpoint == str(tmp_path / 'epoch_2.pth'), note


def test_resume_looks_in_the_work_dir_the_options_give_and_resume_true_falls_back_as_resume_does(tmp_path):
    """--cfg-options work_dir=X is where --resume looks (it looked in ./work_dirs/<config> and started over, or
    resumed another run into X); resume=True in the options with a stale last_checkpoint falls back as --resume
    does (it was mmengine's bare FileNotFoundError); --no-validate with val_dataloader options drops validation."""
    from mmengine.config import Config
    tool = train_tool()
    work = tmp_path / 'x'
    work.mkdir()
    torch.save({'meta': {'epoch': 3}}, work / 'epoch_3.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_9.pth'))
    for argv in (['--resume', '--cfg-options', f'work_dir={work}'],
                 ['--cfg-options', f'work_dir={work}', 'resume=True'],
                 ['--resume', '--no-validate', '--cfg-options', f'work_dir={work}', 'val_dataloader.batch_size=8']):
        cfg = tool.merge_args(Config.fromfile(str(KD_CONFIG)), tool.parse_args([str(KD_CONFIG), *argv]))
        assert cfg.resume and cfg.load_from == str(work / 'epoch_3.pth'), argv
    assert cfg.val_dataloader is None and cfg.val_cfg is None


def test_resume_from_a_checkpoint_of_another_model_is_refused(cifar10_root, teacher_checkpoint, tmp_path):
    """mmengine resumes non-strictly: a student-only checkpoint given to a distillation config restored the epoch
    and the optimizer over fresh weights, exit code 0."""
    from runner_helpers import save_teacher
    student = save_teacher(tmp_path / 'student.pth', backbone='ResNet8')
    run_state = torch.load(student, weights_only=True)
    torch.save({**run_state, 'optimizer': {}, 'meta': {'epoch': 1, 'iter': 2}}, student)  # a student-only run's
    with pytest.raises(SystemExit, match=r'(?s)the checkpoint .*student.pth does not fit the model of .*kd_resnet20'
                                         r'.*missing keys in source state_dict: student.backbone.*load_from='):
        train_tool().main([str(KD_CONFIG), '--work-dir', str(tmp_path / 'work'), '--resume', student,
                           '--cfg-options', f'model.teacher.checkpoint={teacher_checkpoint}',
                           *data_options(cifar10_root)])


def test_resume_from_a_best_checkpoint_or_an_exported_student_is_refused(tmp_path):
    """mmengine resumed from a best_*.pth (saved without the optimizer) without a word: the epoch count went on, the
    warm-up and the momentum started over."""
    torch.save({'state_dict': {}, 'meta': {'epoch': 2, 'iter': 20}}, tmp_path / 'best_accuracy_top1_epoch_2.pth')
    torch.save({'state_dict': {}}, tmp_path / 'student.pth')
    for name, missing in (('best_accuracy_top1_epoch_2.pth', 'no optimizer state'),
                          ('student.pth', 'no optimizer state and no epoch / iteration count')):
        with pytest.raises(SystemExit, match=rf'--resume .*{name}: the checkpoint holds {missing} .*restart the '
                                             rf'optimizer.*load_from=.*{name}'):
            train_tool().merge_args(*_args(tmp_path, '--resume', str(tmp_path / name)))


def test_resume_in_a_copied_work_dir_takes_the_copy_s_checkpoints(tmp_path):
    """last_checkpoint holds an absolute path: a copy of a work dir (its newest checkpoint deleted to branch from
    an earlier epoch) resumed the original run's newest checkpoint."""
    original, copy = tmp_path / 'run', tmp_path / 'branch'
    for folder, epochs in ((original, (3, 4)), (copy, (3,))):
        folder.mkdir()
        for epoch in epochs:
            torch.save({'meta': {'epoch': epoch, 'iter': epoch}}, folder / f'epoch_{epoch}.pth')
        (folder / 'last_checkpoint').write_text(str(original / 'epoch_4.pth'))
    checkpoint, note = train_tool().resumable_checkpoint(str(copy))
    assert checkpoint == str(copy / 'epoch_3.pth')
    assert f'outside this run\'s checkpoint folder {copy}' in note and '--resume PATH' in note
    assert train_tool().resumable_checkpoint(str(original))[0] == str(original / 'epoch_4.pth')
    # a checkpoint hook with out_dir writes to <out_dir>/<work dir's name>: last_checkpoint points there
    from mmengine.config import Config
    cfg = Config(dict(work_dir=str(copy), default_hooks=dict(checkpoint=dict(out_dir=str(tmp_path)))))
    assert train_tool().checkpoint_folder(cfg) == str(tmp_path / 'branch')


def test_a_resumed_run_never_deletes_a_best_checkpoint_outside_its_own_folder(tmp_path):
    """mmengine deletes the previous best by the path the checkpoint's message hub recorded: a run resumed from
    another work dir deleted that run's best_*.pth."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger

    from kdplug.engine.hooks import AtomicCheckpointHook
    other, work = tmp_path / 'other', tmp_path / 'work'
    other.mkdir(), work.mkdir()
    hub = MessageHub.get_instance('resumed_from_another_run')
    runner = SimpleNamespace(work_dir=str(work), logger=MMLogger.get_current_instance(), message_hub=hub)
    for save_best, info in (('accuracy/top1', 'best_ckpt'), (['accuracy/top1', 'loss'], 'best_ckpt_loss')):
        hub.update_info(info, str(other / 'best_loss_epoch_2.pth'))
        hook = AtomicCheckpointHook(interval=1, save_best=save_best, rule='greater' if info == 'best_ckpt' else
                                    ['greater', 'less'])
        hook.before_train(runner)
        assert (hook.best_ckpt_path if info == 'best_ckpt' else hook.best_ckpt_path_dict['loss']) is None
    hub.update_info('best_ckpt', str(work / 'best_accuracy_top1_epoch_1.pth'))  # its own: replaced as mmengine does
    hook = AtomicCheckpointHook(interval=1, save_best='accuracy/top1', rule='greater')
    hook.before_train(runner)
    assert hook.best_ckpt_path == str(work / 'best_accuracy_top1_epoch_1.pth')


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    checkpoint, note = train_tool().resumable_checkpoint(str(tmp_path))
    assert checkpoint is None and 'nothing to resume' in note and 'from scratch' in note


def test_resume_from_a_damaged_checkpoint_is_an_error(tmp_path):
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(SystemExit, match='empty.pth: the checkpoint is empty'):
        train_tool().merge_args(*_args(tmp_path, '--resume', str(tmp_path / 'empty.pth')))


def _args(tmp_path, *argv):
    from mmengine.config import Config
    tool = train_tool()
    args = tool.parse_args([str(KD_CONFIG), '--work-dir', str(tmp_path), *argv])
    return Config.fromfile(str(KD_CONFIG)), args


def test_a_resumed_epoch_based_run_draws_the_views_of_an_uninterrupted_one(cifar10_root, teacher_checkpoint, tmp_path,
                                                                            one_thread):
    """A resumed process started from the run's seed: its next epoch drew the crops and flips of the run's first
    epoch, so the run went on from other data than an uninterrupted one (and an epochs-mode teacher cache refused
    it). RandomStateHook keeps the random state in the checkpoint: 1 epoch + resume to 2 ends with the weights of 2
    epochs in one go."""
    from runner_helpers import make_runner, run_config

    def epochs(work_dir, max_epochs, resume=False):
        cfg = run_config(cifar10_root, work_dir, teacher_checkpoint, max_iters=1,
                         train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
                         param_scheduler=dict(type='ConstantLR', factor=1.0, by_epoch=True),
                         log_processor=dict(by_epoch=True), resume=resume)
        cfg.train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
        cfg.default_hooks.checkpoint = dict(type='kdplug.AtomicCheckpointHook', interval=1, by_epoch=True)
        return make_runner(cfg)

    def weights(work_dir):
        return torch.load(work_dir / 'epoch_2.pth', weights_only=False)['state_dict']

    epochs(tmp_path / 'straight', 2).train()
    epochs(tmp_path / 'resumed', 1).train()
    epochs(tmp_path / 'resumed', 2, resume=True).train()
    straight, resumed = weights(tmp_path / 'straight'), weights(tmp_path / 'resumed')
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_a_default_hook_set_to_none_is_switched_off(tmp_path, capsys, teacher_checkpoint):
    """default_hooks.teacher_data=None (kdplug's) or visualization=None (mmpretrain's) switches the hook off, as None
    does for mmengine's own default hooks; mmengine answered it with a bare AssertionError. mmengine's own None stays
    for mmengine to take out (without it mmengine would register its default)."""
    cfg = train_tool().merge_args(*_args(tmp_path, '--cfg-options', 'default_hooks.teacher_data=None',
                                         'default_hooks.timer=None'))
    assert 'teacher_data' not in cfg.default_hooks and cfg.default_hooks.timer is None
    assert 'default hooks switched off (None): teacher_data' in capsys.readouterr().out
    cfg.model.teacher.checkpoint = teacher_checkpoint
    runner = make_runner(cfg)
    names = [type(hook).__name__ for hook in runner.hooks]
    assert 'TeacherDataCheckHook' not in names and 'IterTimerHook' not in names and 'TeacherEvalHook' in names


def test_mmdet_2_fp16_switch_is_said_to_be_ignored(tmp_path, capsys):
    """fp16=dict(loss_scale=512.) of mmdet / mmcls 2.x configs: mmengine reads no such key, the run trained in float32
    without a word."""
    cfg = train_tool().merge_args(*_args(tmp_path, '--cfg-options', 'fp16.loss_scale=512.0'))
    assert cfg.fp16 == dict(loss_scale=512.0)
    assert "fp16={'loss_scale': 512.0} is mmdet / mmcls 2.x's mixed-precision switch, which mmengine ignores" in \
        capsys.readouterr().err
    train_tool().merge_args(*_args(tmp_path))
    assert 'fp16' not in capsys.readouterr().err


def test_a_resume_with_another_teacher_is_refused_and_load_from_takes_any(cifar10_root, teacher_checkpoint, tmp_path,
                                                                         one_thread):
    """The online teacher was not pinned: --resume with another model.teacher.checkpoint went on learning from
    another network, exit code 0. The checkpoints record the teacher's sha256 (a copy of its file is the same
    teacher); load_from starts a new schedule and may take any teacher."""
    import shutil

    from runner_helpers import make_runner, run_config, save_teacher
    first = run_config(cifar10_root, tmp_path / 'work', teacher_checkpoint, max_iters=2)
    make_runner(first).train()
    assert torch.load(tmp_path / 'work' / 'iter_2.pth', weights_only=False)['meta']['kdplug_teacher']['identity']
    moved = str(shutil.copy(teacher_checkpoint, tmp_path / 'moved_teacher.pth'))
    other = save_teacher(tmp_path / 'other_teacher.pth', seed=7)
    for teacher, refused in ((moved, False), (other, True)):
        cfg = run_config(cifar10_root, tmp_path / 'work', teacher, max_iters=4, resume=True,
                         load_from=str(tmp_path / 'work' / 'iter_2.pth'))
        if refused:
            with pytest.raises(RuntimeError, match=r'(?s)resumes a run that learnt from the teacher \(.*\) \(sha256 '
                                                   r'\w+\.\.\.\), and the teacher \(.*other_teacher.pth\) is another '
                                                   r'teacher.*load_from=CHECKPOINT instead of --resume'):
                make_runner(cfg).train()
        else:
            make_runner(cfg).train()
    cfg = run_config(cifar10_root, tmp_path / 'new', other, max_iters=1,
                     load_from=str(tmp_path / 'work' / 'iter_2.pth'))
    make_runner(cfg).train()
