"""Curves and best / last tables of the scalars mmengine logs (``<work_dir>/<timestamp>/vis_data/scalars.json``).

    python tools/analyze_logs.py RUN [RUN ...] --out curves.png [--keys loss accuracy/top1] [--legend A B ...]
    python tools/analyze_logs.py RUN [RUN ...] --table [--metric accuracy/top1] [--rule greater]

A RUN is a work dir or one scalars.json file. A work dir's logs are read oldest first, so a resumed run continues
its curves (a step logged twice, before an interruption and after the resume, keeps its later value). Training
scalars (``loss``, ``student.loss``, ``distill.loss_kd``, ``lr``...) are drawn against the iteration; validation
scalars (``accuracy/top1``, ``teacher/accuracy/top1``...) against the epoch (the iteration for iteration-based runs).

From Python, with tools/ on ``sys.path`` (a script in tools/ has it)::

    from analyze_logs import best_last_table, load_scalars, plot_curves
    runs = {'KD': load_scalars('work_dirs/kd'), 'NormKD': load_scalars('work_dirs/normkd')}
    plot_curves(runs, ['loss', 'accuracy/top1'], 'curves.png')
    print(best_last_table(runs, 'accuracy/top1'))
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

PathLike = Union[str, Path]
Records = List[Dict[str, Any]]  # the scalars.json objects of one run, in the order they were logged
DEFAULT_KEYS = ('loss', 'accuracy/top1')


def log_files(run: PathLike) -> List[Path]:
    """The scalars.json files of a run: the file itself, or a work dir's ``*/vis_data/scalars.json`` oldest first."""
    run = Path(run)
    if run.is_file():
        return [run]
    if not run.is_dir():
        raise FileNotFoundError(f'{run}: neither a work dir nor a scalars.json file')
    # mmengine names each log dir by its start time (YYYYMMDD_HHMMSS): name order is time order
    files = sorted(run.glob('*/vis_data/scalars.json'))
    if not files:
        raise FileNotFoundError(f'{run}: no */vis_data/scalars.json (LocalVisBackend writes it)')
    return files


def read_records(path: PathLike) -> Records:
    """The JSON objects of one scalars.json file; a last line cut off by a killed run is skipped."""
    records = []
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # the process died mid-write: everything before it is still good
                break
            raise ValueError(f'{path}:{number}: not a JSON object: {line[:80]!r}') from None
    return records


def is_train(record: dict) -> bool:
    return 'iter' in record  # mmengine's LoggerHook tags training records with the iteration, never others


def load_scalars(run: PathLike) -> Records:
    """Every record of a run (a work dir or a scalars.json file, see log_files), oldest first."""
    return [record for path in log_files(run) for record in read_records(path)]


def series(records: Records, key: str) -> Tuple[list, list, str]:
    """(xs, ys, x label) of one scalar: training records against the iteration, others against the epoch (or
    the iteration in iteration-based runs). A step logged again (a resumed run) keeps its last value."""
    train = any(is_train(r) and key in r for r in records)
    by_epoch = any('epoch' in r for r in records if is_train(r))
    points: dict = {}
    last_iter = 0
    for record in records:
        if is_train(record):
            last_iter = record['iter']
        if key not in record or is_train(record) != train:
            continue
        if train:
            x = record['iter']
        elif by_epoch:
            x = record.get('step', 0)  # mmengine logs validation at step = epoch in epoch-based runs
        else:
            # iteration-based: mmengine's step is the epoch (always 0) unless log_metric_by_epoch=False
            x = record.get('step') or last_iter
        points[x] = record[key]
    xs = sorted(points)
    label = 'iteration' if train or not by_epoch else 'epoch'
    return xs, [points[x] for x in xs], label


def keys_of(records: Records) -> List[str]:
    """The scalar names a run logged, training ones first."""
    seen: dict = {}
    for record in sorted(records, key=lambda r: not is_train(r)):
        seen.update(dict.fromkeys(k for k in record if k not in ('step', 'iter', 'epoch')))
    return list(seen)


def default_rule(metric: str) -> str:
    """'less' for losses and times, 'greater' for everything else (accuracies, AP...)."""
    return 'less' if any(word in metric for word in ('loss', 'time', 'error')) else 'greater'


def best_last(records: Records, metric: str, rule: Optional[str] = None) -> Optional[dict]:
    """Best and last value of a metric in a run, with where they were logged; None if it never logged a number.

    Returns ``dict(best=, best_at=, last=, last_at=, x_label=)``; ``rule`` is 'greater' or 'less' (default: by the
    metric's name, see default_rule); a tie keeps the earliest.
    """
    rule = rule or default_rule(metric)
    if rule not in ('greater', 'less'):
        raise ValueError(f"rule must be 'greater' or 'less', got {rule!r}")
    xs, ys, label = series(records, metric)
    finite = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
    if not finite:
        return None
    sign = 1 if rule == 'greater' else -1
    best_at, best = max(finite, key=lambda point: (sign * point[1], -point[0]))
    return dict(best=best, best_at=best_at, last=ys[-1], last_at=xs[-1], x_label=label)


def _number(value: Any) -> str:
    return f'{value:.6g}' if isinstance(value, float) else str(value)


def best_last_table(runs: Mapping[str, Records], metric: str = 'accuracy/top1', rule: Optional[str] = None) -> str:
    """A markdown table: one row per run, the best and last value of ``metric`` and where they were logged."""
    header = f'| run | best {metric} | at | last {metric} | at |'
    lines = [header, '|' + '|'.join('---' for _ in range(5)) + '|']
    for name, records in runs.items():
        found = best_last(records, metric, rule)
        if found is None:
            lines.append(f'| {name} | - | - | - | - |')
            continue
        unit = found['x_label']
        lines.append(f"| {name} | {_number(found['best'])} | {unit} {_number(found['best_at'])} "
                     f"| {_number(found['last'])} | {unit} {_number(found['last_at'])} |")
    return '\n'.join(lines)


#: The files --out can write (matplotlib's formats that a person opens as an image or a document).
IMAGE_SUFFIXES = ('.png', '.pdf', '.svg', '.jpg', '.jpeg')


def plot_curves(runs: Mapping[str, Records], keys: Sequence[str] = DEFAULT_KEYS, out: PathLike = 'curves.png',
                title: Optional[str] = None) -> Path:
    """One panel per key, every run that logged it as one curve (validation points marked), written to ``out``
    (PNG, or any format matplotlib knows by the suffix). A key no run logged is an error naming the ones logged."""
    # Figure without pyplot: no global backend to switch (Agg renders the file), safe to call from any program
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    missing = [key for key in keys if not any(key in keys_of(records) for records in runs.values())]
    if missing or not keys:
        logged = sorted({k for records in runs.values() for k in keys_of(records)})
        raise KeyError(f'no run logged {missing or "any key"}; logged: {", ".join(logged)}')
    columns = min(2, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(6.4 * columns, 4.0 * rows), layout='constrained')
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        labels = []
        for name, records in runs.items():
            xs, ys, label = series(records, key)
            if not xs:
                continue
            train = any(is_train(r) and key in r for r in records)
            # a validation curve has few points (often one): mark them, or they vanish
            ax.plot(xs, ys, label=name, marker=None if train and len(xs) > 30 else 'o', markersize=3)
            labels.append(label)
        ax.set_title(key)
        ax.set_xlabel(' / '.join(dict.fromkeys(labels)))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations and epochs are whole numbers
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize='small')
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def run_name(run: PathLike) -> str:
    """A work dir's name; for a <work_dir>/<timestamp>/vis_data/scalars.json file, its work dir's."""
    run = Path(run).resolve()
    if run.is_file() and run.parent.name == 'vis_data':
        return run.parents[2].name
    return run.stem if run.is_file() else run.name


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('runs', nargs='+', metavar='RUN', help='work dirs or scalars.json files')
    parser.add_argument('--keys', nargs='+', help=f'scalars to draw (default: those of {DEFAULT_KEYS} logged)')
    parser.add_argument('--out', type=Path, help='write the curves to this PNG')
    parser.add_argument('--legend', nargs='+', help='a name for each RUN (default: the work dir names)')
    parser.add_argument('--title')
    parser.add_argument('--table', action='store_true', help='print the best / last value of --metric per run')
    parser.add_argument('--metric', default='accuracy/top1', help='the --table metric (default: accuracy/top1)')
    parser.add_argument('--rule', choices=['greater', 'less'],
                        help="which value is best (default: 'less' for losses and times, else 'greater')")
    args = parser.parse_args(argv)
    if args.out is None and not args.table:
        parser.error('nothing to do: give --out PNG, --table, or both')
    if args.out is not None:  # before the runs are read: matplotlib would add .png itself, or fail on the suffix
        if args.out.suffix.lower() not in IMAGE_SUFFIXES:
            parser.error(f'--out {args.out}: give an image file name ending in one of {", ".join(IMAGE_SUFFIXES)} '
                         '(e.g. curves.png)')
        clash = next((p for p in (args.out, *args.out.parents) if p.exists() and (p == args.out) == p.is_dir()),
                     None)
        if clash is not None:
            parser.error(f'--out {args.out}: {clash} is a {"folder" if clash.is_dir() else "file"}')
    if args.legend is not None and len(args.legend) != len(args.runs):
        parser.error(f'--legend has {len(args.legend)} names for {len(args.runs)} runs')
    names = args.legend or [run_name(run) for run in args.runs]
    runs: dict = {}
    for name, run in zip(names, args.runs):
        unique, n = name, 1
        while unique in runs:  # two work dirs of the same name (e.g. seeds in separate folders)
            n += 1
            unique = f'{name} ({n})'
        try:
            runs[unique] = load_scalars(run)
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
    if args.table:
        if not any(args.metric in keys_of(records) for records in runs.values()):  # a table of dashes says nothing
            logged = sorted({k for records in runs.values() for k in keys_of(records)})
            parser.error(f'--metric {args.metric}: no run logged it; logged: {", ".join(logged)}')
        print(best_last_table(runs, args.metric, args.rule))
    if args.out is not None:
        keys = args.keys or [k for k in DEFAULT_KEYS if any(k in keys_of(r) for r in runs.values())]
        try:
            path = plot_curves(runs, keys, args.out, args.title)
        except KeyError as error:
            parser.error(error.args[0])
        print(f'curves of {", ".join(keys)} for {len(runs)} run(s) written to {path}', file=sys.stderr)


if __name__ == '__main__':
    main()
