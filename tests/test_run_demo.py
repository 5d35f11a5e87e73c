"""tools/run_demo.py's results table (best and last top-1, mean and std over seeds), on hand-made scalars.json files
shaped as mmengine 0.10.7 writes them: one per launch in <work_dir>/<timestamp>/vis_data/, training records keyed by
iteration, validation records keyed by epoch, and kdplug.TeacherEvalHook's teacher/* record."""
import importlib.util
import json
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope='module')
def demo():
    spec = importlib.util.spec_from_file_location('run_demo', REPO / 'tools' / 'run_demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(work_dir: Path, timestamp: str, top1_by_epoch: dict, iters_per_epoch: int = 10) -> Path:
    records = [{'teacher/accuracy/top1': 55.05, 'teacher/accuracy/top5': 94.2, 'step': 0}]
    for epoch, top1 in top1_by_epoch.items():
        step = epoch * iters_per_epoch
        records.append({'lr': 0.05, 'data_time': 0.01, 'loss': 1.5, 'time': 0.2, 'epoch': epoch, 'iter': step,
                        'step': step})
        records.append({'accuracy/top1': top1, 'accuracy/top5': 90.0, 'data_time': 0.01, 'time': 0.05,
                        'step': epoch})
    log = work_dir / timestamp / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    log.write_text(''.join(json.dumps(record) + '\n' for record in records))
    return work_dir


def test_best_is_the_maximum_over_epochs_and_last_the_last_epoch(demo, tmp_path):
    run = write_run(tmp_path / 'kd', '20261123_101500', {1: 40.0, 2: 52.5, 3: 51.0, 4: 50.25})
    assert demo.top1_history(run) == {1: 40.0, 2: 52.5, 3: 51.0, 4: 50.25}
    assert demo.best_and_last(run) == (52.5, 50.25)


def test_a_resumed_run_reads_every_launch_and_the_later_one_wins(demo, tmp_path):
    run = write_run(tmp_path / 'kd', '20261123_101500', {1: 40.0, 2: 53.0, 3: 30.0})  # killed after epoch 3's val
    write_run(run, '20261123_113000', {3: 51.0, 4: 50.0})  # resumed from epoch 2's checkpoint
    assert demo.top1_history(run) == {1: 40.0, 2: 53.0, 3: 51.0, 4: 50.0}
    assert demo.best_and_last(run) == (53.0, 50.0)


def test_a_run_without_validation_gives_nothing(demo, tmp_path):
    assert demo.best_and_last(tmp_path / 'never_ran') == (None, None)


def test_one_seed_table(demo, tmp_path):
    teacher = write_run(tmp_path / 'teacher', '20261123_100000', {1: 30.0, 2: 50.0, 3: 56.0, 4: 55.05})
    student = write_run(tmp_path / 'student', '20261123_101500', {1: 35.0, 2: 45.0, 3: 50.6, 4: 50.55})
    text = demo.results_table([('teacher resnet20', [teacher], 125.4), ('resnet8, student alone', [student], 77.0)],
                              seeds=[0], epochs=4)
    lines = text.splitlines()
    assert lines[0].startswith('CIFAR-10, 10k training images, 4 epochs, batch 64;')
    assert 'validated after every epoch' in lines[0] and 'seed(s) 0:' in lines[0] and 'std' not in lines[0]
    assert lines[2:] == [
        '| model | best top-1 (%) | last top-1 (%) | train time per run (s) |',
        '|---|---|---|---|',
        '| teacher resnet20 | 56.00 | 55.05 | 125 |',
        '| resnet8, student alone | 50.60 | 50.55 | 77 |',
    ]


def test_seeds_table_gives_mean_and_sample_std_of_best_and_last(demo, tmp_path):
    seed1 = write_run(tmp_path / 'kd_seed1', '20261123_101500', {1: 40.0, 2: 52.0, 3: 51.0, 4: 50.0})
    seed2 = write_run(tmp_path / 'kd_seed2', '20261123_103000', {1: 45.0, 2: 47.0, 3: 53.0, 4: 49.0})
    seed3 = write_run(tmp_path / 'kd_seed3', '20261123_104500', {1: 41.0, 2: 48.0, 3: 50.0, 4: 51.0})
    missing = tmp_path / 'normkd_seed2'  # a run that failed before its first validation
    alone = write_run(tmp_path / 'alone_seed1', '20261123_110000', {1: 40.0, 2: 44.0, 3: 46.0, 4: 46.0})
    rows = [('resnet8, KD (T=4)', [seed1, seed2, seed3], 98.0),
            ('resnet8, NormKD (t_norm=2)', [seed1, missing, seed3], 115.0),
            ('resnet8, student alone', [alone, alone, alone], 77.0)]
    text = demo.results_table(rows, seeds=[1, 2, 3], epochs=4)
    lines = text.splitlines()
    assert 'seed(s) 1, 2, 3, mean +- std over the seeds (sample std), then each seed:' in lines[0]
    # best 52, 53, 51: mean 52, sample std 1; last 50, 49, 51: mean 50, sample std 1
    assert lines[4] == ('| resnet8, KD (T=4) | 52.00 +- 1.00 (52.00, 53.00, 51.00) '
                        '| 50.00 +- 1.00 (50.00, 49.00, 51.00) | 98 |')
    assert lines[5] == '| resnet8, NormKD (t_norm=2) | n/a | n/a | 115 |'
    assert lines[6] == ('| resnet8, student alone | 46.00 +- 0.00 (46.00, 46.00, 46.00) '
                        '| 46.00 +- 0.00 (46.00, 46.00, 46.00) | 77 |')


def test_demo_validates_after_every_epoch_and_its_students_read_the_cached_teacher(demo, tmp_path, monkeypatch):
    """main() asks every run for a validation after every epoch (and reads them back), caches the teacher once per
    seed (the students' epochs of views) and points the distilled students at that store, without training
    anything; with --online-teacher there is no cache and the students run the teacher."""
    calls = []

    def fake_train(name, config, work_dir, options, tool=None, args=()):
        tool = tool or demo.TRAIN
        calls.append((Path(tool).name, Path(config).name, options, args))
        if tool == demo.TRAIN:
            write_run(work_dir, '20261123_100000', {epoch: 50.0 + epoch for epoch in range(1, 4)})
        return 1.0

    monkeypatch.setattr(demo, 'train', fake_train)
    monkeypatch.setattr(demo.subprocess, 'run', lambda *args, **kwargs: None)  # prepare_data.py
    demo.main(['--epochs', '3', '--work-dir', str(tmp_path), '--seeds', '0', '1'])
    assert calls and all('train_cfg.val_interval=1' in options and 'train_cfg.max_epochs=3' in options
                         for _, _, options, _ in calls)
    caches = [call for call in calls if call[0] == 'cache_teacher.py']
    assert [call[3][:4] for call in caches] == [('--mode', 'epochs', '--dtype', 'float32')] * 2
    assert ['randomness.seed=0' in caches[0][2], 'randomness.seed=1' in caches[1][2]] == [True, True]
    distilled = [options for tool, config, options, _ in calls if tool == 'train.py' and config.startswith('kd_')]
    assert len(distilled) == 2 and all('model.teacher.type=CachedTeacher' in options for options in distilled)
    assert f'model.teacher.store={tmp_path / "teacher_cache_seed1" / "store"}' in distilled[1]
    text = (tmp_path / 'results.md').read_text()
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'  # the students' curves
    assert '| teacher resnet20 | 53.00 | 53.00 | 1 |' in text
    assert '| teacher logits cached (seed 0) | - | - | 1 |' in text
    assert '| resnet8, KD (T=4) | 53.00 +- 0.00 (53.00, 53.00) | 53.00 +- 0.00 (53.00, 53.00) | 1 |' in text

    calls.clear()
    demo.main(['--epochs', '3', '--work-dir', str(tmp_path / 'online'), '--online-teacher'])
    assert not [call for call in calls if call[0] == 'cache_teacher.py']
    assert not any('model.teacher.type=CachedTeacher' in options for _, _, options, _ in calls)


@pytest.mark.parametrize('argv,said', [
    (['--seeds', '0', '0'], '--seeds 0 0: give each seed once'),
    (['--teacher-checkpoint', 'nope.pth'], '--teacher-checkpoint nope.pth is not a file'),
    (['--epochs', '1'], '--epochs must be at least 2'),
])
def test_arguments_the_demo_cannot_run_with_are_refused_before_anything_runs(demo, argv, said, capsys, monkeypatch):
    """A missing teacher checkpoint was found only at the first distilled student, after the student alone had
    trained; a repeated seed wrote both runs into one work dir."""
    monkeypatch.setattr(demo.subprocess, 'run', lambda *args, **kwargs: pytest.fail('something ran'))
    with pytest.raises(SystemExit):
        demo.main(argv)
    assert said in capsys.readouterr().err
