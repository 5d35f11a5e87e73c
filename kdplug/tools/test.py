"""Evaluate a checkpoint with a config: a kdplug distillation run's checkpoint (its student is evaluated; the
teacher's checkpoint or cache store is not read: kdplug.teachers.base.evaluating_the_student) or a plain mmpretrain
/ mmdet one.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl [--out-item pred|metrics]]
                         [--show-dir DIR] [--show] [--tta] [--amp] [--no-pin-memory] [--cfg-options k=v ...]

``--out`` also writes every test sample's prediction to a pickle: a list of dicts (for a classifier: pred_score,
pred_label, gt_label, img_path...), through mmengine's ``DumpResults`` as mmpretrain's own ``tools/test.py --out``
does, so its analysis tools read the file; the metrics go beside it (``results.metrics.json``). With mmpretrain's
``--out-item pred`` only the predictions are written, with ``--out-item metrics`` only the metrics, to ``--out``
(.json, .yaml or .pkl). The metrics are also printed and written to ``<work_dir>/<timestamp>/<timestamp>.json``.
``--amp`` tests in mixed precision (``test_cfg.fp16``), ``--no-pin-memory`` unpins the test dataloader, as the
libraries' own flags.

``--tta``: test-time augmentation as the libraries' own ``--tta``: the model inside the config's ``tta_model``, the
test pipeline replaced by its ``tta_pipeline``; a config without them gets its library's test-tool default:
mmpretrain's, the scores of each image and of its horizontal flip averaged (``AverageClsScoreTTA``), or mmdet's,
the detections of both views merged by NMS (``DetTTAModel``).

``--show-dir DIR`` / ``--show`` draw the predictions as the library's own ``tools/test.py`` does, through the
config's ``default_hooks.visualization`` (mmpretrain's ``VisualizationHook``, mmdet's ``DetVisualizationHook``,
mmseg's ``SegVisualizationHook``): every ``--interval``-th test sample (default every one), written to DIR (mmdet:
``<work_dir>/<timestamp>/DIR``, as mmdet's own tool; mmseg: the visualizer's save_dir) or shown in a window.
"""
import argparse
import copy
import inspect
import json
import numbers
import os
import os.path as osp
import sys
from typing import Callable, Optional, Sequence

import mmengine
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from kdplug.engine.checkpoint import (load_checkpoint_file, load_checkpoints_strictly, route_local_checkpoint_loads,
                                     unreadable_reason)
from kdplug.teachers.base import evaluating_the_student
from kdplug.tools import check_kdplug_types, check_launcher, drop_switched_off_hooks, name_damaged_images, read_config
from kdplug.tools.config_keys import check_runner_keys
from kdplug.tools.train import check_data


def draw_predictions(cfg: Config, show_dir: Optional[str], show: bool, wait_time: float, interval: int,
                     error: Callable[[str], None]) -> None:
    """Turn on the config's visualization hook as its library's own test tool does. The libraries spell the switch
    and the folder differently (mmpretrain: ``enable``, ``out_dir``; mmdet: ``draw``, ``test_out_dir``; mmseg:
    ``draw`` and the visualizer's ``save_dir``): the hook's constructor says which it takes."""
    from mmengine.registry import HOOKS
    hook = cfg.get('default_hooks', {}).get('visualization')
    if not hook or 'type' not in hook:
        error('--show / --show-dir draw through default_hooks.visualization, which this config does not have: add '
              "default_hooks=dict(visualization=dict(type='VisualizationHook')) (mmpretrain; mmdet: "
              "'DetVisualizationHook', mmseg: 'SegVisualizationHook')")
    name = hook['type'] if not isinstance(hook['type'], str) or '.' in hook['type'] or not cfg.get('default_scope') \
        else f'{cfg.default_scope}.{hook["type"]}'
    hook_class = HOOKS.get(name) if isinstance(name, str) else name
    if hook_class is None:
        error(f'default_hooks.visualization: {name!r} is not a registered hook (check default_scope)')
    options = inspect.signature(hook_class).parameters
    switch = next((key for key in ('enable', 'draw') if key in options), None)
    if switch is None:
        error(f'{hook_class.__name__} has neither enable= nor draw=: kdplug cannot turn it on')
    hook[switch] = True
    hook['interval'] = interval
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        folder = next((key for key in ('out_dir', 'test_out_dir') if key in options), None)
        if folder is not None:
            hook[folder] = show_dir
        else:  # mmseg's hook draws into the visualizer's save_dir
            cfg.visualizer['save_dir'] = show_dir


def check_drawn(show_dir: str, before: set, samples: int, interval: int) -> None:
    """mmpretrain's hook names each drawing after its image's file name alone: test images that share names across
    class folders (``airplane/0000.jpg``, ``bird/0000.jpg``) overwrite each other's drawings. Say so."""
    drawn = {path for path in os.listdir(show_dir)} - before if osp.isdir(show_dir) else set()
    expected = -(-samples // interval)
    if len(drawn) < expected:
        print(f'warning: {expected} test samples were drawn into {len(drawn)} files of {show_dir}: the hook names '
              'each drawing after its image\'s file name, and test images in different folders share names, so '
              'later drawings replaced earlier ones. The metrics are not affected; to keep every drawing, give the '
              'test images unique file names', file=sys.stderr)


#: mmdet's tools/test.py default when a config has no tta_model: the detections of the views merged by NMS (mmdet
#: registers DetTTAModel in mmengine's root registry, so it has no ``mmdet.`` prefix).
MMDET_TTA_MODEL = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
#: The meta keys mmdet's DetTTAModel needs to undo each view's flip.
MMDET_TTA_META = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction')


def with_test_time_augmentation(cfg: Config, error: Callable[[str], None]) -> None:
    """The model inside ``cfg.tta_model`` and the test pipeline replaced by ``cfg.tta_pipeline``, as the libraries'
    own ``--tta``. A config without them gets its library's test-tool default: mmpretrain's (each image and its
    horizontal flip, their scores averaged) or mmdet's (the same two views, their detections merged by NMS at IoU
    0.5, 100 per image); mmseg's test tool has none."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        scope = cfg.get('default_scope')
        if scope not in ('mmpretrain', 'mmdet'):
            error(f'--tta: the config has no tta_model and tta_pipeline, and {scope}\'s test tool has no default '
                  '(mmseg\'s configs define them beside each model): add them to the config')
        test_pipeline = cfg.test_dataloader.dataset.pipeline
        cfg.setdefault('tta_model', dict(type='mmpretrain.AverageClsScoreTTA') if scope == 'mmpretrain' else
                       copy.deepcopy(MMDET_TTA_MODEL))
        if 'tta_pipeline' not in cfg:
            flips = [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)]
            pack = copy.deepcopy(test_pipeline[-1])
            if scope == 'mmdet':
                pack['meta_keys'] = MMDET_TTA_META
            cfg.tta_pipeline = [*copy.deepcopy(test_pipeline[:-1]),
                                dict(type='TestTimeAug', transforms=[flips, [pack]])]
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)  # often the same dict as val_dataloader
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def exported_student(checkpoint: str, cfg: Config) -> Optional[dict]:
    """The state dict of a student exported by tools/export_student.py, given with the distillation config (whose
    student it is: letKD's student keeps its KD layers, and no student-only config of it is shipped); None
    otherwise."""
    model = cfg.model.get('module', cfg.model) if 'tta_model' in cfg else cfg.model
    if '://' in checkpoint or str(model.get('type', '')).split('.')[-1] != 'Distiller':
        return None
    loaded = load_checkpoint_file(checkpoint, role='the')
    meta = loaded.get('meta') if isinstance(loaded, dict) else None
    if not isinstance(meta, dict) or 'exported_from' not in meta:
        return None
    return loaded['state_dict']


def load_into_student(runner: Runner, state_dict: dict, checkpoint: str, config: str) -> None:
    """An exported student's weights into the distiller's student, strictly."""
    from mmengine.model import BaseTTAModel

    from kdplug.engine.hooks import unwrap
    model = unwrap(runner.model)  # a DDP wrapper's distiller
    model = model.module if isinstance(model, BaseTTAModel) else model  # --tta: the distiller inside
    result = model.student.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f'the exported student {checkpoint} does not fit the student of {config}: missing keys '
                         f'{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}. Evaluate it with '
                         'the distillation config of the run it was exported from')


def json_metrics(metrics: dict) -> dict:
    """Numbers as JSON numbers (mmseg's metrics are numpy float32: numbers.Real, not float), anything else as text."""
    return {key: float(value) if isinstance(value, numbers.Real) else str(value) for key, value in metrics.items()}


#: The files ``--out-item metrics`` writes (mmengine.dump's formats).
METRICS_SUFFIXES = ('.json', '.yaml', '.yml', '.pkl', '.pickle')


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--out', help='also write the predictions of every test sample to this .pkl file, and the '
                        'metrics beside it (results.pkl: results.metrics.json); see --out-item')
    parser.add_argument('--out-item', choices=['metrics', 'pred'],
                        help="as mmpretrain's: 'pred' writes the predictions only, 'metrics' the metrics only, to "
                        '--out (.json, .yaml or .pkl)')
    parser.add_argument('--amp', action='store_true', help='test with automatic mixed precision (test_cfg.fp16)')
    parser.add_argument('--no-pin-memory', action='store_true', help='do not pin the test dataloader\'s memory')
    parser.add_argument('--tta', action='store_true', help="test-time augmentation: the config's tta_model and "
                        'tta_pipeline (mmpretrain: by default the average of each image and its horizontal flip)')
    parser.add_argument('--show-dir', help='draw the predictions of the test samples into this folder')
    parser.add_argument('--show', action='store_true', help='show the drawn predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2.0, help='seconds each window is shown (--show)')
    parser.add_argument('--interval', type=int, default=1, help='draw every N-th test sample (--show, --show-dir)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    # DumpResults would refuse other suffixes only once the runner (model, teacher, data) is built: say so at once
    if args.out_item is not None and args.out is None:
        parser.error('--out-item needs --out, the file to write')
    if args.out_item == 'metrics':
        if not args.out.endswith(METRICS_SUFFIXES):
            parser.error(f'--out with --out-item metrics must name a {", ".join(METRICS_SUFFIXES)} file, got '
                         f'{args.out!r}')
    elif args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must name a .pkl or .pickle file (or give --out-item metrics: .json, .yaml), got '
                     f'{args.out!r}')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = read_config(args.config)
    reason = None if '://' in args.checkpoint else unreadable_reason(args.checkpoint)
    if reason is not None:  # before the model and the data are built
        parser.error(f'the checkpoint {args.checkpoint} {reason}')
    route_local_checkpoint_loads()
    check_launcher(args.launcher)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    drop_switched_off_hooks(cfg)
    name_damaged_images(cfg)
    check_kdplug_types(cfg)
    check_runner_keys(cfg)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.amp:  # as mmpretrain's and mmdet's test tools
        import torch
        if cfg.get('default_scope') == 'mmdet' and not torch.cuda.is_available():
            parser.error('--amp without a GPU tests in bfloat16 (mmengine\'s CPU autocast), which mmcv\'s NMS and '
                         'RoIAlign do not take: test detection configs without --amp on a CPU')
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    if args.no_pin_memory:
        cfg.test_dataloader = dict(copy.deepcopy(cfg.test_dataloader), pin_memory=False)
    if args.show or args.show_dir:
        draw_predictions(cfg, args.show_dir, args.show, args.wait_time, args.interval, parser.error)
    if args.tta:
        with_test_time_augmentation(cfg, parser.error)
    check_data(cfg, ['test_dataloader'])
    exported = exported_student(args.checkpoint, cfg)
    if exported is not None:  # loaded below into the distiller's student, not by the runner
        cfg.load_from = None
    with evaluating_the_student():  # no teacher checkpoint or store is read: the student alone is evaluated
        runner = Runner.from_cfg(cfg)
    if exported is not None:
        load_into_student(runner, exported, args.checkpoint, args.config)
    load_checkpoints_strictly(runner, args.config, 'Evaluate it with the config of the run that wrote it (a student '
                              'exported by tools/export_student.py: the student\'s own config, e.g. configs/students/, '
                              'or the distillation config itself)')
    if args.out is not None and args.out_item != 'metrics':
        # one more metric of the test evaluator: gathered from every rank, written once by rank 0; mmdet's own tool
        # dumps with DumpDetResults (the ground truth left out), which its analysis tools expect
        dump = DumpResults
        if cfg.get('default_scope') == 'mmdet':
            from mmdet.evaluation import DumpDetResults as dump
        runner.test_evaluator.metrics.append(dump(out_file_path=osp.abspath(args.out)))
    drawn_before = set(os.listdir(args.show_dir)) if args.show_dir and osp.isdir(args.show_dir) else set()
    metrics = runner.test()
    if runner.rank == 0:  # every rank has the gathered metrics: one line
        print(metrics)
    if args.show_dir and cfg.default_hooks.visualization.get('out_dir') == args.show_dir and runner.rank == 0:
        check_drawn(args.show_dir, drawn_before, len(runner.test_dataloader.dataset), args.interval)
    if args.out is not None and runner.rank == 0:
        if args.out_item == 'metrics':
            mmengine.dump(json_metrics(metrics), args.out)
        elif args.out_item is None:
            with open(f'{osp.splitext(args.out)[0]}.metrics.json', 'w') as file:
                json.dump(json_metrics(metrics), file, indent=1)


if __name__ == '__main__':
    main()
