"""The README's main job: a real distillation on CIFAR-10 on a CPU in about ten minutes.

1. prepares CIFAR-10 (tools/prepare_data.py: from ../shared/data, or downloaded);
2. trains a small teacher (resnet20) on a class-balanced 10k-image subset for 4 epochs;
3. trains the student (resnet8) on the same data and schedule: alone, with KD, NormKD and KD + logit
   standardization, each through tools/train.py and an mmengine Runner;
4. prints a table of top-1 accuracies on 2k test images (and writes it to work_dirs/demo/results.md).

    python tools/run_demo.py [--epochs 4] [--work-dir work_dirs/demo]
    python tools/run_demo.py --seeds 1 2 --teacher-ckpt work_dirs/demo/teacher_resnet20/epoch_4.pth \
        --work-dir work_dirs/demo_seeds          # more seeds of the students, same teacher

The numbers of such a short run are small and noisy (one seed by default, --seeds for more); the comparison is fair:
same data, schedule, seed.
"""
import argparse
import json
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


def last_metrics(work_dir: Path) -> dict:
    """The metrics of the last validation of a run, from mmengine's scalars.json."""
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    metrics = {}
    for line in logs[-1].read_text().splitlines() if logs else []:
        record = json.loads(line)
        if 'accuracy/top1' in record:
            metrics = record
        for key, value in record.items():
            if key.startswith('teacher/'):
                metrics.setdefault('teacher', {})[key] = value
    return metrics


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
                        help='train every student once per seed (the teacher once, seed 0); the table gives the mean')
    parser.add_argument('--teacher-ckpt', type=Path, help='reuse this teacher instead of training one')
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error('--epochs must be at least 2: one warm-up epoch, then the cosine decay')
    subprocess.run([sys.executable, str(REPO / 'tools' / 'prepare_data.py'), 'cifar10'], check=True)
    epochs = [f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
              f'param_scheduler.1.end={args.epochs}']

    rows = []
    teacher_ckpt = args.teacher_ckpt
    if teacher_ckpt is None:
        teacher_dir = args.work_dir / 'teacher_resnet20'
        seconds = train('teacher resnet20', CONFIGS / 'teacher_resnet20_4e_cifar10-10k.py', teacher_dir, epochs)
        rows.append(('teacher resnet20', [last_metrics(teacher_dir).get('accuracy/top1')], seconds))
        teacher_ckpt = teacher_dir / f'epoch_{args.epochs}.pth'
    for name, config in STUDENTS:
        accuracies, seconds = [], 0.0
        for seed in args.seeds:
            work_dir = args.work_dir / (Path(config).stem + (f'_seed{seed}' if args.seeds != [0] else ''))
            options = epochs + [f'randomness.seed={seed}']
            options += [f'model.teacher_ckpt={teacher_ckpt}'] if 'alone' not in name else []
            seconds += train(f'{name}, seed {seed}', CONFIGS / config, work_dir, options)
            accuracies.append(last_metrics(work_dir).get('accuracy/top1'))
        rows.append((f'resnet8, {name}', accuracies, seconds / len(args.seeds)))

    def cell(accuracies):
        if None in accuracies:
            return 'n/a'
        mean = sum(accuracies) / len(accuracies)
        if len(accuracies) == 1:
            return f'{mean:.2f}'
        return f'{mean:.2f} ({", ".join(f"{a:.2f}" for a in accuracies)})'

    seeds = ', '.join(map(str, args.seeds))
    table = [f'| model | top-1 (%) on 2k CIFAR-10 test images, seed(s) {seeds} | train time per run (s) |',
             '|---|---|---|']
    table += [f'| {name} | {cell(accuracies)} | {sec:.0f} |' for name, accuracies, sec in rows]
    text = (f'CIFAR-10, 10k training images, {args.epochs} epochs, batch 64 (last epoch):\n\n' + '\n'.join(table))
    (args.work_dir / 'results.md').write_text(text + '\n')
    print('\n' + text, flush=True)


if __name__ == '__main__':
    main()
