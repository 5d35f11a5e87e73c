"""Evaluate a checkpoint with a config: a kdplug distillation run's checkpoint (its student is evaluated; the
teacher's checkpoint or cache store is not read: kdplug.teachers.base.evaluating_the_student) or a plain mmpretrain
/ mmdet one.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--cfg-options k=v ...]

``--out`` also writes every test sample's prediction to a pickle: a list of dicts (for a classifier: pred_score,
pred_label, gt_label, img_path...), through mmengine's ``DumpResults`` as mmpretrain's own ``tools/test.py --out``
does, so its analysis tools read the file; the metrics go beside it (``results.metrics.json``). The metrics are
also printed and written to ``<work_dir>/<timestamp>/<timestamp>.json``.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from kdplug.engine.checkpoint import load_checkpoints_strictly, route_local_checkpoint_loads, unreadable_reason
from kdplug.teachers.base import evaluating_the_student
from kdplug.tools.train import check_data


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--out', help='also write the predictions of every test sample to this .pkl file, and the '
                        'metrics beside it (<out>.metrics.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    # DumpResults would refuse other suffixes only once the runner (model, teacher, data) is built: say so at once
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must name a .pkl or .pickle file, got {args.out!r}')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    reason = None if '://' in args.checkpoint else unreadable_reason(args.checkpoint)
    if reason is not None:  # before the model and the data are built
        parser.error(f'the checkpoint {args.checkpoint} {reason}')
    route_local_checkpoint_loads()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    check_data(cfg, ['test_dataloader'])
    with evaluating_the_student():  # no teacher checkpoint or store is read: the student alone is evaluated
        runner = Runner.from_cfg(cfg)
    load_checkpoints_strictly(runner, args.config, 'Evaluate it with the config of the run that wrote it (a student '
                              'exported by tools/export_student.py: the student\'s own config, e.g. configs/students/)')
    if args.out is not None:
        # one more metric of the test evaluator: gathered from every rank, written once by rank 0
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=osp.abspath(args.out)))
    metrics = runner.test()
    print(metrics)
    if args.out is not None and runner.rank == 0:
        with open(f'{osp.splitext(args.out)[0]}.metrics.json', 'w') as file:
            json.dump({key: float(value) if isinstance(value, (int, float)) else str(value)
                       for key, value in metrics.items()}, file, indent=1)


if __name__ == '__main__':
    main()
