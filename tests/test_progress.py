"""Progress on long work: tools/prepare_data.py's extraction bar, the k-means log of tools/fit_codewords.py
(kdplug.letkd.codewords), the teacher evaluation of kdplug.TeacherEvalHook, and tools/run_demo.py's one line per run
(and the tail of a failed run). Small synthetic inputs and stand-in scripts only: nothing is trained."""
import contextlib
import importlib.util
import io
import sys
import tarfile
import textwrap
import types
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def prepare_data():
    return load_tool('prepare_data')


@pytest.fixture(scope='module')
def demo():
    return load_tool('run_demo')


def small_tar(path: Path, files: int) -> Path:
    with tarfile.open(path, 'w:gz') as tar:
        for i in range(files):
            data = f'image {i}'.encode()
            info = tarfile.TarInfo(f'train/class{i % 3}/{i:03d}.jpg')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_extraction_reports_progress(prepare_data, tmp_path, capsys):
    archive = small_tar(tmp_path / 'small.tar.gz', 250)
    assert prepare_data.extract_tar(archive, tmp_path / 'out', lambda name: name) == 250
    out = capsys.readouterr().out
    assert 'extracting small.tar.gz: 250 files' in out
    assert '250/250' in out and out.endswith('\n')  # the bar reached the end and its line was ended
    assert out.count('\r') <= 100, 'redrawn about every 1%, not once per file'
    assert len(list((tmp_path / 'out' / 'train').rglob('*.jpg'))) == 250


def test_zip_extraction_reports_progress(prepare_data, tmp_path, capsys):
    archive = tmp_path / 'small.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        for i in range(40):
            zf.writestr(f'top/val/images/{i:02d}.JPEG', b'x')
    assert prepare_data.extract_zip(archive, tmp_path / 'out', 'top/') == 40
    out = capsys.readouterr().out
    assert 'extracting small.zip: 40 files' in out and '40/40' in out


def test_progress_without_mmengine_prints_a_line_per_tenth(prepare_data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmengine.utils', None)  # the import fails as if mmengine were absent
    progress = prepare_data.Progress(1000, 'writing PNG images')
    for _ in range(1000):
        progress.update()
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'writing PNG images: 1000 files'
    assert lines[1:] == [f'  {n}/1000 files' for n in range(100, 1001, 100)]


def test_kmeans_logs_seeding_and_iterations():
    import torch
    from kdplug.letkd.codewords import kmeans
    messages = []
    kmeans(torch.randn(600, 4, generator=torch.Generator().manual_seed(0)), 100, iters=3, tol=0.0,
           log=messages.append)
    seeding = [m for m in messages if m.startswith('k-means++ seeding')]
    assert len(seeding) == 10 and seeding[-1].startswith('k-means++ seeding: 100/100 centers (')
    assert [m.split(' (')[0] for m in messages if 'iteration' in m] == [
        f'k-means K=100, n=600: iteration {i}/3' for i in (1, 2, 3)]


class FakeLogger:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    warning = info


def fake_runner(batches: int):
    """What TeacherEvalHook.before_train touches of an mmengine Runner, with a distiller that has a teacher."""
    model = types.SimpleNamespace(teacher_model=object(), predicting_with_teacher=contextlib.nullcontext,
                                  eval=lambda: None, train=lambda: None, val_step=lambda batch: [batch])
    seen = []
    evaluator = types.SimpleNamespace(process=lambda data_samples, data_batch: seen.extend(data_samples),
                                      evaluate=lambda size: {'accuracy/top1': 100.0 * len(seen) / size})

    class Loader(list):
        dataset = list(range(batches))

    return types.SimpleNamespace(model=model, val_loop=types.SimpleNamespace(evaluator=evaluator),
                                 val_dataloader=Loader(range(batches)), logger=FakeLogger(), iter=0,
                                 message_hub=types.SimpleNamespace(update_info=lambda key, value: None,
                                                                   update_scalar=lambda key, value: None))


def test_teacher_evaluation_logs_progress_every_interval_batches():
    from kdplug.engine.hooks import TeacherEvalHook
    runner = fake_runner(25)
    TeacherEvalHook(interval=10).before_train(runner)
    progress = [line.split(' (')[0] for line in runner.logger.lines if line.startswith('teacher evaluation')]
    assert progress == ['teacher evaluation: 10/25 batches', 'teacher evaluation: 20/25 batches',
                        'teacher evaluation: 25/25 batches']
    assert runner.logger.lines[-1] == 'teacher (evaluated once before training): accuracy/top1: 100.0000'
    with pytest.raises(ValueError, match='interval'):
        TeacherEvalHook(interval=0)


def test_a_teacher_evaluation_without_metrics_is_a_warning_not_an_empty_line():
    """mmdet's evaluator gives {} when the teacher detects nothing: the log said "teacher (...): " and nothing."""
    from kdplug.engine.hooks import TeacherEvalHook
    runner = fake_runner(3)
    runner.val_loop.evaluator.evaluate = lambda size: {}
    TeacherEvalHook(interval=10).before_train(runner)
    assert runner.logger.lines[-1].startswith('teacher (evaluated once before training): the evaluator gave no '
                                              'metrics (mmdet: no detection above test_cfg.rcnn.score_thr')
    assert 'untrained or of another model' in runner.logger.lines[-1]


def stand_in_train(tmp_path: Path, body: str) -> Path:
    """A script run in tools/train.py's place: argv is CONFIG --work-dir DIR [--cfg-options ...]."""
    script = tmp_path / 'stand_in_train.py'
    script.write_text('import json, pathlib, sys\nwork_dir = pathlib.Path(sys.argv[3])\n' + textwrap.dedent(body))
    return script


def test_a_failed_training_run_prints_the_tail_of_its_output_and_the_path(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, 'TRAIN', stand_in_train(tmp_path, '''
        for i in range(1, 61):
            print(f'hook table line {i}')
        print('RuntimeError: the teacher checkpoint is missing', file=sys.stderr)
        sys.exit(3)
    '''))
    work_dir = tmp_path / 'kd'
    with pytest.raises(SystemExit) as exc:
        demo.phase(3, 6, 'resnet8, KD (T=4), seed 0', 4, demo.CONFIGS / 'kd_resnet20_resnet8_4e_cifar10-10k.py',
                   work_dir, ['randomness.seed=0'])
    out = capsys.readouterr().out
    output = work_dir / 'train_output.txt'
    assert out.startswith('[3/6] resnet8, KD (T=4), seed 0: training 4 epochs ... failed (exit code 3) after ')
    assert f'--- last 40 lines of {output} ---' in out  # tmp_path lies outside the current folder: shown whole
    tail = out.split('---\n', 1)[1].splitlines()
    assert tail[0] == 'hook table line 22' and tail[-3:] == ['hook table line 60',
                                                              'RuntimeError: the teacher checkpoint is missing', '---']
    assert 'hook table line 21\n' not in out
    assert f'full output: {output}' in str(exc.value) and 'resnet8, KD (T=4), seed 0 failed' in str(exc.value)
    assert output.read_text().count('\n') == 61  # the whole output is kept


def test_a_training_run_prints_one_line_with_time_top1_and_log(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, 'TRAIN', stand_in_train(tmp_path, '''
        print('a config dump and hook tables nobody should see on the console')
        run = work_dir / '20261123_100000'
        (run / 'vis_data').mkdir(parents=True)
        (run / '20261123_100000.log').write_text('mmengine log\\n')
        (run / 'vis_data' / 'scalars.json').write_text(''.join(json.dumps(r) + '\\n' for r in [
            {'accuracy/top1': 56.0, 'step': 3}, {'accuracy/top1': 55.05, 'step': 4}]))
    '''))
    work_dir = tmp_path / 'teacher_resnet20'
    seconds = demo.phase(2, 6, 'teacher resnet20', 4, demo.CONFIGS / 'teacher_resnet20_4e_cifar10-10k.py', work_dir,
                         [])
    out = capsys.readouterr().out
    log = work_dir / '20261123_100000' / '20261123_100000.log'
    assert out.startswith('[2/6] teacher resnet20: training 4 epochs ... done in ')
    assert out.endswith(f', top-1 55.05 (best 56.00); log: {log}\n') and out.count('\n') == 1
    assert 'config dump' in (work_dir / 'train_output.txt').read_text() and seconds >= 0


def test_durations_read_as_minutes_and_seconds(demo):
    assert [demo.duration(s) for s in (0.4, 59.6, 133, 3725)] == ['0s', '1m00s', '2m13s', '62m05s']


def test_a_teacher_without_a_network_says_why_it_is_not_evaluated():
    """With a cache store the hook returned without a word, where the docs promise the teacher's accuracy first."""
    from kdplug.engine.hooks import TeacherEvalHook
    from kdplug.teachers.cached import CachedTeacher
    cached = object.__new__(CachedTeacher)  # its store is not read here
    cached.description = 'the cached teacher (store)'
    plugin_source = types.SimpleNamespace(description='the virtual teacher')  # a plugin's source without a network
    for source in (cached, plugin_source):
        runner = fake_runner(3)
        runner.model = types.SimpleNamespace(teacher_model=None, teacher=source)
        TeacherEvalHook(interval=10).before_train(runner)
        assert runner.logger.lines == [f'TeacherEvalHook: {source.description} is not a network to evaluate' + (
            ' (evaluate the checkpoint its store was made from with tools/test.py)' if source is cached else '')]


def test_an_ema_teacher_is_not_evaluated_before_training():
    """Before training the EMA teacher is the untrained student's copy: the hook evaluated it and warned that "the
    teacher checkpoint is probably untrained" (there is no checkpoint)."""
    from kdplug.engine.hooks import TeacherEvalHook
    from kdplug.teachers.ema import EMATeacher
    runner = fake_runner(3)
    runner.model.teacher = EMATeacher(xi=0.9)
    TeacherEvalHook(interval=10).before_train(runner)
    assert runner.logger.lines == ["TeacherEvalHook: the EMA self-teacher is the student's own average, as untrained "
                                   'as the student before training: nothing to evaluate (drop the hook)']
