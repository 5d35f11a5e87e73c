"""The README's main job: a real distillation on CIFAR-10 on a CPU in about ten minutes.

1. prepares CIFAR-10 (tools/prepare_data.py: from ../shared/data, or downloaded);
2. trains a small teacher (resnet20) on a class-balanced 10k-image subset for 4 epochs, and caches its logits once
   (tools/cache_teacher.py --mode epochs: the views the students' seeded runs draw, 4 x 10k);
3. trains the student (resnet8) on the same data and schedule: alone, with KD, NormKD and KD + logit
   standardization, each through tools/train.py and an mmengine Runner, the distilled ones reading the cached
   teacher (``--online-teacher``: run the teacher at every step instead);
4. prints a table of top-1 accuracies on 2k test images, validated after every epoch: the best over the epochs
   (what the papers report) and the last (and writes it to work_dirs/demo/results.md).

It prints one line per training run (time, top-1, where its mmengine log is); the full output of each tools/train.py
goes to ``train_output.txt`` in the run's work dir, and a failed run prints the last lines of it.

    python tools/run_demo.py [--epochs 4] [--work-dir work_dirs/demo]
    python tools/run_demo.py --seeds 1 2 --teacher-checkpoint work_dirs/demo/teacher_resnet20/epoch_4.pth \
        --work-dir work_dirs/demo_seeds          # more seeds of the students, same teacher

The numbers of such a short run are small and noisy (one seed by default; with --seeds the table gives the mean and
the sample standard deviation over the seeds, then each seed); the comparison is fair: same data, schedule, seed.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs' / 'demo'
TRAIN = REPO / 'tools' / 'train.py'
CACHE_TEACHER = REPO / 'tools' / 'cache_teacher.py'
OUTPUT = 'train_output.txt'  # tools/train.py's stdout and stderr, in the run's work dir
TAIL = 40  # lines of that output shown when a run fails
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
        if not work_dirs:  # a step that trains nothing (the teacher cache): its time only
            lines.append(f'| {name} | - | - | {seconds:.0f} |')
            continue
        results = [best_and_last(Path(work_dir)) for work_dir in work_dirs]
        best, last = [result[0] for result in results], [result[1] for result in results]
        lines.append(f'| {name} | {cell(best)} | {cell(last)} | {seconds:.0f} |')
    return '\n'.join(lines)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f'{minutes}m{seconds:02d}s' if minutes else f'{seconds}s'


def shown(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it (shorter lines), else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_log(work_dir: Path) -> Path | None:
    """The newest mmengine log of a run (``<work_dir>/<timestamp>/<timestamp>.log``), or None."""
    logs = sorted(log for log in Path(work_dir).glob('*/*.log') if log.stem == log.parent.name)
    return logs[-1] if logs else None


def train(name: str, config: Path, work_dir: Path, options: list, tool: Path | None = None,
          args: tuple = ()) -> float:
    """tools/train.py (or another ``tool``) on ``config``, its output into ``<work_dir>/train_output.txt``; returns
    the seconds it took. A failed run prints the last lines of that output and exits."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    output = work_dir / OUTPUT
    cmd = [sys.executable, str(tool or TRAIN), str(config), *(args or ('--work-dir', str(work_dir)))]
    start = time.time()
    with open(output, 'w') as out:
        code = subprocess.run(cmd + (['--cfg-options', *options] if options else []), cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    if code:
        lines = output.read_text(errors='replace').splitlines()
        print(f'failed (exit code {code}) after {duration(time.time() - start)}', flush=True)
        print(f'--- last {min(TAIL, len(lines))} lines of {shown(output)} ---', *lines[-TAIL:], '---', sep='\n',
              flush=True)
        log = run_log(work_dir)
        raise SystemExit(f'run_demo.py: {name} failed; full output: {shown(output)}'
                         + (f'; mmengine log: {shown(log)}' if log else ''))
    return time.time() - start


def phase(step: int, steps: int, name: str, epochs: int, config: Path, work_dir: Path, options: list) -> float:
    """One line for one training run: what, then (once done) its time, top-1 and log; returns train()'s seconds."""
    print(f'[{step}/{steps}] {name}: training {epochs} epochs ... ', end='', flush=True)
    seconds = train(name, config, work_dir, options)
    best, last = best_and_last(work_dir)
    top1 = f'top-1 {last:.2f} (best {best:.2f})' if last is not None else 'no top-1 logged'
    log = run_log(work_dir) or Path(work_dir) / OUTPUT
    print(f'done in {duration(seconds)}, {top1}; log: {shown(log)}', flush=True)
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=4,
                        help='epochs of every run, teacher and students (default 4: one warm-up, then cosine)')
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'demo',
                        help='where the runs, the teacher cache and results.md go (default work_dirs/demo)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='train every student once per seed (the teacher once, seed 0); the table gives '
                             'the mean and the sample std over the seeds of the best and the last top-1')
    parser.add_argument('--teacher-checkpoint', '--teacher-ckpt', dest='teacher_checkpoint', type=Path,
                        help='reuse this teacher checkpoint instead of training one')
    parser.add_argument('--online-teacher', action='store_true',
                        help='run the teacher at every distillation step instead of caching its logits once')
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error('--epochs must be at least 2: one warm-up epoch, then the cosine decay')
    if len(set(args.seeds)) != len(args.seeds):  # one work dir per seed: a repeat would overwrite its run
        parser.error(f'--seeds {" ".join(map(str, args.seeds))}: give each seed once')
    if args.teacher_checkpoint is not None and not args.teacher_checkpoint.is_file():  # before any training
        parser.error(f'--teacher-checkpoint {args.teacher_checkpoint} is not a file: give the .pth of a trained '
                     'teacher (work_dirs/demo/teacher_resnet20/epoch_4.pth after a first run), or leave it out')
    caches = 0 if args.online_teacher else len(args.seeds)
    steps = 1 + (args.teacher_checkpoint is None) + caches + len(STUDENTS) * len(args.seeds)
    print(f'[1/{steps}] CIFAR-10: tools/prepare_data.py cifar10', flush=True)
    subprocess.run([sys.executable, str(REPO / 'tools' / 'prepare_data.py'), 'cifar10'], check=True)
    epochs = [f'train_cfg.max_epochs={args.epochs}', 'train_cfg.val_interval=1',
              f'param_scheduler.1.end={args.epochs}']

    rows, step = [], 1
    teacher_checkpoint = args.teacher_checkpoint
    if teacher_checkpoint is None:
        teacher_dir = args.work_dir / 'teacher_resnet20'
        step += 1
        seconds = phase(step, steps, 'teacher resnet20', args.epochs, CONFIGS / 'teacher_resnet20_4e_cifar10-10k.py',
                        teacher_dir, epochs)
        rows.append(('teacher resnet20', [teacher_dir], seconds))
        teacher_checkpoint = teacher_dir / f'epoch_{args.epochs}.pth'
    stores = {}
    for seed in ([] if args.online_teacher else args.seeds):
        # the views the students' runs (this seed, this data and schedule) draw, scored once, read by all of them;
        # float32 (1.6 MB here): the same batches as the online teacher's, so the same logits and the same numbers
        # (float16 would round them, and NormKD's per-sample temperature carries such rounding into another run)
        cache_dir = args.work_dir / f'teacher_cache_seed{seed}'
        # a store left by an earlier demo may come from another teacher (retrained above) or kdplug version: the
        # cache tool would refuse to mix them, so this demo scores its teacher afresh
        shutil.rmtree(cache_dir / 'store', ignore_errors=True)
        step += 1
        print(f'[{step}/{steps}] teacher resnet20, logits of the students\' {args.epochs} epochs of views (seed '
              f'{seed}): tools/cache_teacher.py --mode epochs ... ', end='', flush=True)
        seconds = train('teacher cache', CONFIGS / STUDENTS[1][1], cache_dir, epochs + [
            f'randomness.seed={seed}', f'model.teacher.checkpoint={teacher_checkpoint}'], tool=CACHE_TEACHER,
            args=('--mode', 'epochs', '--dtype', 'float32', '--out', str(cache_dir / 'store')))
        print(f'done in {duration(seconds)}; log: {shown(cache_dir / OUTPUT)}', flush=True)
        rows.append((f'teacher logits cached (seed {seed})', [], seconds))
        stores[seed] = cache_dir / 'store'
    for name, config in STUDENTS:
        work_dirs, seconds = [], 0.0
        for seed in args.seeds:
            work_dir = args.work_dir / (Path(config).stem + (f'_seed{seed}' if args.seeds != [0] else ''))
            options = epochs + [f'randomness.seed={seed}']
            options += [f'model.teacher.checkpoint={teacher_checkpoint}'] if 'alone' not in name else []
            if 'alone' not in name and seed in stores:
                options += ['model.teacher.type=CachedTeacher', f'model.teacher.store={stores[seed]}']
            step += 1
            seconds += phase(step, steps, f'resnet8, {name}, seed {seed}', args.epochs, CONFIGS / config, work_dir,
                             options)
            work_dirs.append(work_dir)
        rows.append((f'resnet8, {name}', work_dirs, seconds / len(args.seeds)))

    text = results_table(rows, args.seeds, args.epochs)
    (args.work_dir / 'results.md').write_text(text + '\n')
    print('\n' + text, flush=True)
    # the students' curves beside the table (tools/analyze_logs.py; the total loss is on each method's own scale)
    sys.path.insert(0, str(REPO / 'tools'))  # a sibling tool, whether this one runs as a script or is imported
    from analyze_logs import load_scalars, plot_curves
    curves = {f'{name}, seed {seed}' if len(work_dirs) > 1 else name: load_scalars(work_dir)
              for name, work_dirs, _ in rows if name.startswith('resnet8')
              for seed, work_dir in zip(args.seeds, work_dirs)}
    plot_curves(curves, ['accuracy/top1', 'loss'], args.work_dir / 'curves.png')
    print(f'curves: {args.work_dir / "curves.png"}', flush=True)


if __name__ == '__main__':
    main()
