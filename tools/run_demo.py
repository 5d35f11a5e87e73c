"""The README's main job: a real distillation on CIFAR-10 on a CPU in about ten minutes.

1. prepares CIFAR-10 (tools/prepare_data.py: from ../shared/data, or downloaded);
2. trains a small teacher (resnet20) on a class-balanced 10k-image subset for 4 epochs;
3. trains the student (resnet8) on the same data and schedule: alone, with KD, NormKD and KD + logit
   standardization, each through tools/train.py and an mmengine Runner;
4. prints a table of top-1 accuracies on 2k test images, validated after every epoch: the best over the epochs
   (what the papers report) and the last (and writes it to work_dirs/demo/results.md).

    python tools/run_demo.py [--epochs 4] [--work-dir work_dirs/demo]
    python tools/run_demo.py --seeds 1 2 --teacher-ckpt work_dirs/demo/teacher_resnet20/epoch_4.pth \
        --work-dir work_dirs/demo_seeds          # more seeds of the students, same teacher

The numbers of such a short run are small and noisy (one seed by default; with --seeds the table gives the mean and
the sample standard deviation over the seeds, then each seed); the comparison is fair: same data, schedule, seed.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs' / 'demo'
STUDENTS = [
    ('student alone', 'student_resnet8_4e_cifar10-10k.py'),
    ('KD (T=4)', 'kd_resnet20_resnet8_4e_cifar10-10k.py'),
    ('NormKD (t_norm=2)', 'normkd_resnet20_resnet8_4e_cifar10-10k.py'),
    ('KD+LS (z-score, T=2)', 'kd-ls_resnet20_resnet8_4e_cifar10-10k.py'),
]


def top1_history(work_dir: Path) -> dict:
    """{epoch: top-1} of every validation of a run, from mmengine's scalars.json files: one per launch, in a
    timestamped folder; for an epoch validated twice (a resumed run), the later launch wins."""
    history = {}
    for log in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in log.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if 'accuracy/top1' in record:
                history[record['step']] = record['accuracy/top1']
    return history


def best_and_last(work_dir: Path) -> tuple:
    """(best top-1 over the validated epochs, top-1 of the last validated epoch), or (None, None) without any."""
    history = top1_history(work_dir)
    if not history:
        return None, None
    return max(history.values()), history[max(history)]


def cell(values: list) -> str:
    """One value as is; several (one per seed) as mean +- sample std, then each value; 'n/a' if one is missing."""
    if not values or None in values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.2f}'
    mean, std = statistics.mean(values), statistics.stdev(values)
    return f'{mean:.2f} +- {std:.2f} ({", ".join(f"{v:.2f}" for v in values)})'


def results_table(rows: list, seeds: list, epochs: int) -> str:
    """The demo's table. rows: (name, work dirs (one per seed; the teacher's one), train seconds per run)."""
    spread = ', mean +- std over the seeds (sample std), then each seed' if len(seeds) > 1 else ''
    lines = [f'CIFAR-10, 10k training images, {epochs} epochs, batch 64; top-1 (%) on 2k test images, validated after '
             f'every epoch: the best over the epochs and the last; seed(s) {", ".join(map(str, seeds))}{spread}:',
             '', '| model | best top-1 (%) | last top-1 (%) | train time per run (s) |', '|---|---|---|---|']
    for name, work_dirs, seconds in rows:
        results = [best_and_last(Path(work_dir)) for work_dir in work_dirs]
        best, last = [result[0] for result in results], [result[1] for result in results]
        lines.append(f'| {name} | {cell(best)} | {cell(last)} | {seconds:.0f} |')
    return '\n'.join(lines)


def train(name: str, config: Path, work_dir: Path, options: list) -> float:
    print(f'\n=== {name}: tools/train.py {config.relative_to(REPO)} ===', flush=True)
    start = time.time()
    cmd = [sys.executable, str(REPO / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir)]
    subprocess.run(cmd + (['--cfg-options', *options] if options else []), cwd=REPO, check=True)
    return time.time() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'demo')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='train every student once per seed (the teacher once, seed 0); the table gives '
                             'the mean and the sample std over the seeds of the best and the last top-1')
    parser.add_argument('--teacher-ckpt', type=Path, help='reuse this teacher instead of training one')
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error('--epochs must be at least 2: one warm-up epoch, then the cosine decay')
    subprocess.run([sys.executable, str(REPO / 'tools' / 'prepare_data.py'), 'cifar10'], check=True)
    epochs = [f'train_cfg.max_epochs={args.epochs}', 'train_cfg.val_interval=1',
              f'param_scheduler.1.end={args.epochs}']

    rows = []
    teacher_ckpt = args.teacher_ckpt
    if teacher_ckpt is None:
        teacher_dir = args.work_dir / 'teacher_resnet20'
        seconds = train('teacher resnet20', CONFIGS / 'teacher_resnet20_4e_cifar10-10k.py', teacher_dir, epochs)
        rows.append(('teacher resnet20', [teacher_dir], seconds))
        teacher_ckpt = teacher_dir / f'epoch_{args.epochs}.pth'
    for name, config in STUDENTS:
        work_dirs, seconds = [], 0.0
        for seed in args.seeds:
            work_dir = args.work_dir / (Path(config).stem + (f'_seed{seed}' if args.seeds != [0] else ''))
            options = epochs + [f'randomness.seed={seed}']
            options += [f'model.teacher_ckpt={teacher_ckpt}'] if 'alone' not in name else []
            seconds += train(f'{name}, seed {seed}', CONFIGS / config, work_dir, options)
            work_dirs.append(work_dir)
        rows.append((f'resnet8, {name}', work_dirs, seconds / len(args.seeds)))

    text = results_table(rows, args.seeds, args.epochs)
    (args.work_dir / 'results.md').write_text(text + '\n')
    print('\n' + text, flush=True)
    # the students' curves beside the table (tools/analyze_logs.py; the total loss is on each method's own scale)
    sys.path.insert(0, str(REPO / 'tools'))  # a sibling tool, whether this one runs as a script or is imported
    from analyze_logs import load_scalars, plot_curves
    curves = {f'{name}, seed {seed}' if len(work_dirs) > 1 else name: load_scalars(work_dir)
              for name, work_dirs, _ in rows if name != 'teacher resnet20'
              for seed, work_dir in zip(args.seeds, work_dirs)}
    plot_curves(curves, ['accuracy/top1', 'loss'], args.work_dir / 'curves.png')
    print(f'curves: {args.work_dir / "curves.png"}', flush=True)


if __name__ == '__main__':
    main()
