"""Train a model (a student distilled by kdplug.Distiller, or a plain mmpretrain / mmdet teacher) from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [...]      # several GPUs, through torchrun and mmengine's launcher

The flags are OpenMMLab's (mmpretrain / mmdet tools/train.py).
"""
import argparse
import copy
import glob
import os
import os.path as osp
import re
import sys
from typing import Mapping, Optional, Sequence, Tuple
from urllib.error import URLError

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.runner import Runner

from kdplug.engine.allocator import keep_freed_memory
from kdplug.engine.checkpoint import (load_checkpoints_strictly, missing_run_state, route_local_checkpoint_loads,
                                     unreadable_reason)
from kdplug.tools import check_kdplug_types, check_launcher, drop_switched_off_hooks, name_damaged_images, read_config
from kdplug.tools.config_keys import check_runner_keys


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (kdplug distillation or a plain teacher)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one of the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision training (AmpOptimWrapper, GPU)')
    parser.add_argument('--no-validate', action='store_true', help='do not evaluate during training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr with the total batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.teacher.checkpoint=teacher.pth')
    parser.add_argument('--no-pin-memory', action='store_true', help='do not pin the dataloaders\' memory')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='do not keep the dataloaders\' workers alive between epochs')
    parser.add_argument('--default-malloc', action='store_true',
                        help='leave glibc\'s malloc as it is (kdplug.engine.allocator keeps freed memory for the next '
                        'iteration: CPU steps up to 25%% faster)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


#: The names mmengine's CheckpointHook gives a run's checkpoints (``epoch_3.pth``, ``iter_2000.pth``).
RUN_CHECKPOINT = re.compile(r'(epoch|iter)_(\d+)\.pth')


def checkpoint_folder(cfg: Config) -> str:
    """Where the run's checkpoint hook writes: the work dir, or ``<out_dir>/<work dir's name>`` (mmengine's
    CheckpointHook with ``out_dir``)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    out_dir = hook.get('out_dir') if isinstance(hook, Mapping) else None
    return osp.join(out_dir, osp.basename(cfg.work_dir.rstrip(osp.sep))) if out_dir else cfg.work_dir


def resumable_checkpoint(work_dir: str, folder: Optional[str] = None) -> Tuple[Optional[str], str]:
    """The newest intact checkpoint of ``work_dir`` and a sentence saying where it came from (None: nothing).

    ``last_checkpoint`` names it unless a crash left that file empty or pointing at a truncated checkpoint, or it
    names a file outside ``folder`` (the checkpoint hook's, default the work dir: a copied work dir names the
    original run's checkpoints, which the copy would continue and then prune); then the newest ``epoch_<n>.pth`` /
    ``iter_<n>.pth`` of ``folder`` that is complete is taken instead.
    """
    folder = folder or work_dir
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = open(pointer).read().strip() if osp.isfile(pointer) else ''
    elsewhere = bool(named) and '://' not in named and \
        osp.dirname(osp.realpath(named)) != osp.realpath(folder)
    if named and not elsewhere and unreadable_reason(named) is None:
        return named, f'resuming from {named} (last_checkpoint of {work_dir})'
    # a run's own checkpoints only: a best_*.pth holds no optimizer or scheduler state, an exported student no run
    # newest by the epoch / iteration in the name (a copied work dir has the copy's times), then by time
    candidates = sorted((path for path in glob.glob(osp.join(folder, '*.pth'))
                         if RUN_CHECKPOINT.fullmatch(osp.basename(path))),
                        key=lambda path: (int(RUN_CHECKPOINT.fullmatch(osp.basename(path)).group(2)),
                                          osp.getmtime(path)), reverse=True)
    intact = next((path for path in candidates if unreadable_reason(path) is None), None)
    problem = (f'last_checkpoint names {named}, outside this run\'s checkpoint folder {folder} (a copied work dir '
               'names the original run\'s; --resume PATH resumes from that one on purpose)' if elsewhere else
               f'last_checkpoint names {named}, which {unreadable_reason(named)}' if named else
               'last_checkpoint is empty' if osp.isfile(pointer) else 'there is no last_checkpoint')
    if intact is not None:
        return intact, f'{problem}; resuming from the newest intact checkpoint instead: {intact}'
    return None, (f'nothing to resume in {folder} ({problem}, and no complete epoch_<n>.pth or iter_<n>.pth): '
                  'training starts from scratch')


#: The dataloader defaults of mmpretrain's own tools/train.py (batches stacked in the workers, pinned memory,
#: workers kept between epochs): a classification config runs as fast here as there. mmdet's tools set none.
CLASSIFICATION_DATALOADER_DEFAULTS = dict(pin_memory=True, persistent_workers=True,
                                          collate_fn=dict(type='default_collate'))


def set_dataloader_defaults(cfg: Config, args: argparse.Namespace) -> None:
    """mmpretrain's dataloader defaults under a classification config's keys (the config's own values win)."""
    if cfg.get('default_scope') != 'mmpretrain':
        return
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field) is None:
            continue
        loader = ConfigDict(copy.deepcopy(CLASSIFICATION_DATALOADER_DEFAULTS))
        loader.update(cfg[field])
        if args.no_pin_memory:
            loader.pin_memory = False
        if args.no_persistent_workers or not loader.get('num_workers', 0):
            loader.persistent_workers = False  # torch refuses persistent workers without workers
        cfg[field] = loader


def downloads_itself(dataset: Mapping, scope: Optional[str]) -> bool:
    """Whether a dataset fetches its own files when they are missing (mmpretrain's CIFAR10 / CIFAR100 / MNIST:
    ``download=True``)."""
    from mmengine.registry import DefaultScope

    from kdplug.teachers.cached import dataset_defaults
    with DefaultScope.overwrite_default_scope(scope):
        defaults = dataset_defaults(dataset.get('type'))
    return 'download' in defaults and bool(dataset.get('download', defaults['download']))


def missing_data(dataset: Mapping, scope: Optional[str]) -> Optional[str]:
    """What is wrong with the dataset's local ``data_root`` or ``ann_file``: 'the data_root ... does not exist', 'the
    ann_file ... is empty' (None: present, remote, or fetched by the dataset itself)."""
    root = dataset.get('data_root') or ''
    if not isinstance(root, str) or '://' in root or downloads_itself(dataset, scope):
        return None
    if root and not osp.isdir(root):
        where = '' if osp.isabs(root) else f' (relative to the working directory {os.getcwd()})'
        return f'the data_root {root!r}{where} does not exist'
    ann = dataset.get('ann_file') or ''
    if not isinstance(ann, str) or not ann or '://' in ann:
        return None
    path = ann if osp.isabs(ann) else osp.join(root, ann)
    if not osp.exists(path):
        return f'the ann_file {path!r} does not exist'
    if osp.isfile(path) and osp.getsize(path) < (1 << 16):  # a list of no image is short; a real one is not read
        with open(path, 'rb') as file:
            if not file.read().strip():
                return f'the ann_file {path!r} is empty: it lists no images'
    return None


def check_data(cfg: Config, loaders: Sequence[str] = ('train_dataloader', 'val_dataloader')) -> None:
    """Name a dataset folder or list that is not there before the models are built (the dataset's own error came
    after them, as a bare FileNotFoundError), with the ways to get it. Training reads the training and validation
    data (``--no-validate``: the training data), tools/test.py the test data."""
    for loader in loaders:
        dataset = (cfg.get(loader) or {}).get('dataset')
        while isinstance(dataset, Mapping):  # wrappers (RepeatDataset, ClassBalancedDataset) hold theirs inside
            missing = missing_data(dataset, cfg.get('default_scope'))
            if missing:
                fix = (f'write one line per image into it (mmpretrain\'s list format: "folder/image.jpg label"), '
                       f'or point {loader}.dataset.ann_file at another list, or set it to \'\' to read the class '
                       'folders' if missing.endswith('lists no images') else
                       'prepare the data (python tools/prepare_data.py cifar10 | tiny-imagenet | coco128, which '
                       'writes under the repository\'s data/: run from the repository, or give --root; '
                       f'docs/get_started.md, "Data"), or point {loader}.dataset.data_root at your copy')
                raise SystemExit(f'{loader}: {missing}. To fix: {fix}, with --cfg-options')
            dataset = dataset.get('dataset')


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    check_launcher(args.launcher)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP is already enabled in the config')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        cfg.setdefault('auto_scale_lr', {})['enable'] = True
    # the options first: the work dir a resume looks in, and val_dataloader.* options before --no-validate drops it
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if str((cfg.get('optim_wrapper') or {}).get('type', '')).split('.')[-1] == 'AmpOptimWrapper':
        from mmengine.device import get_device
        if get_device() == 'cpu':  # mmengine's own test (CUDA, NPU, MLU or MUSA), which it makes a bare assert
            how = '--amp' if args.amp else 'optim_wrapper.type=AmpOptimWrapper'
            raise SystemExit(f'{how}: mmengine\'s AmpOptimWrapper needs a GPU (float16 autocast + GradScaler); '
                             f'this machine has none: train without {how}')
    if cfg.get('fp16') is not None and int(os.environ.get('RANK', '0')) == 0:  # mmdet 2.x's switch: nobody reads it
        print(f'warning: fp16={cfg.fp16} is mmdet / mmcls 2.x\'s mixed-precision switch, which mmengine ignores: '
              'this run trains in float32. Use --amp (optim_wrapper=dict(type=\'AmpOptimWrapper\', ...)) on a GPU',
              file=sys.stderr, flush=True)
    if args.resume == 'auto' or (args.resume is None and cfg.get('resume') is True and not cfg.get('load_from')):
        checkpoint, note = resumable_checkpoint(cfg.work_dir, checkpoint_folder(cfg))  # resume=True: the same
        if int(os.environ.get('RANK', '0')) == 0:  # under torchrun every rank makes the same choice
            print(f'--resume: {note}', flush=True)
        cfg.resume, cfg.load_from = checkpoint is not None, checkpoint
    elif args.resume is not None:
        reason = unreadable_reason(args.resume)
        if reason is not None:
            raise SystemExit(f'--resume {args.resume}: the checkpoint {reason}. Give another checkpoint, or '
                             '--resume alone to take the newest intact one of the work dir')
        missing = missing_run_state(args.resume)
        if missing:
            raise SystemExit(f'--resume {args.resume}: the checkpoint holds no {" and no ".join(missing)} (a '
                             'best_*.pth or an exported student holds weights only): resuming from it would restart '
                             'the optimizer\'s momentum and the learning-rate schedule from their first step. Resume '
                             'from a run\'s epoch_<n>.pth / iter_<n>.pth, or start a new schedule from its weights '
                             f'with --cfg-options load_from={args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    load_from = cfg.get('load_from')
    reason = unreadable_reason(load_from) if isinstance(load_from, str) and '://' not in load_from else None
    if reason is not None:  # before the model and the data are built
        raise SystemExit(f'load_from {load_from}: the checkpoint {reason}. Give the path of a complete .pth file '
                         '(an mmengine run writes epoch_<n>.pth into its work dir)')
    switched_off = drop_switched_off_hooks(cfg)
    if switched_off and int(os.environ.get('RANK', '0')) == 0:
        print(f'default hooks switched off (None): {", ".join(switched_off)}', flush=True)
    set_dataloader_defaults(cfg, args)
    name_damaged_images(cfg)
    check_kdplug_types(cfg)
    check_runner_keys(cfg)
    return cfg


def load_student_weights_into_the_student(runner: Runner) -> None:
    """``load_from`` with a student's own weights (tools/export_student.py's file, a run of the student's config, a
    pretrained backbone): their keys lack the distiller's ``student.``, so mmengine's non-strict load matched none
    and the run trained from scratch with exit code 0. Such a checkpoint is loaded into the student; one that
    shares no key with the distiller or its student stops the run. Plain (non-distillation) models are left as
    mmengine loads them."""
    from kdplug.distillers.distiller import Distiller
    from kdplug.engine.checkpoint import load_weights
    from kdplug.engine.hooks import unwrap
    load = runner.load_checkpoint

    def load_checkpoint(filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: Sequence = ((r'^module.', ''),)):
        model = unwrap(runner.model)
        if isinstance(model, Distiller):
            keys = set(load_weights(filename, role='the load_from'))
            for pattern, replacement in revise_keys:  # the names mmengine will load them under
                keys = {re.sub(pattern, replacement, key) for key in keys}
            if keys.isdisjoint(model.state_dict(keep_vars=True)):
                if keys.isdisjoint(model.student.state_dict(keep_vars=True)):
                    raise SystemExit(
                        f'load_from {filename}: none of its {len(keys)} weights (e.g. {sorted(keys)[:3]}) is the '
                        'distiller\'s (student.*) or its student\'s: it is a checkpoint of another model. load_from '
                        'takes a checkpoint of a distillation run of this config or the student\'s own weights '
                        '(tools/export_student.py); a teacher\'s checkpoint goes to model.teacher.checkpoint')
                runner.logger.info(f'load_from {filename} holds the student\'s own weights (no "student." in '
                                   'their names): loaded into the student')
                revise_keys = [*revise_keys, (r'^', 'student.')]
        return load(filename, map_location=map_location, strict=strict, revise_keys=revise_keys)
    runner.load_checkpoint = load_checkpoint


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    route_local_checkpoint_loads()  # resume / load_from: weights only (torch >= 2.6's default), kdplug's messages
    allocator = 'malloc left as it is (--default-malloc)' if args.default_malloc else keep_freed_memory()
    cfg = merge_args(read_config(args.config), args)
    check_data(cfg)
    runner = Runner.from_cfg(cfg)
    if cfg.get('resume'):  # a resumed run continues this config's model: every weight must fit
        load_checkpoints_strictly(runner, args.config, 'Resume from a checkpoint of a run of this config, or start '
                                  'from its weights with load_from=CHECKPOINT (not strict: e.g. another head)')
    else:
        load_student_weights_into_the_student(runner)
    runner.logger.info(allocator)
    try:
        runner.train()
    except URLError as err:  # mmengine's init_cfg downloads (torchvision://, open-mmlab://, http): a bare traceback
        import torch
        raise SystemExit(f'a download failed ({err.reason}): the weights a model\'s init_cfg names (e.g. '
                         'torchvision://resnet50, the ImageNet backbones of the detection configs) are fetched when '
                         f'the run starts. Offline, put the file in {torch.hub.get_dir()}/checkpoints (its name is '
                         'the last part of the URL), or train from random weights with --cfg-options '
                         'model.student.backbone.init_cfg=None (model.backbone.init_cfg=None in a teacher\'s own '
                         'config; a distillation\'s teacher needs none: its checkpoint replaces them)') from None


if __name__ == '__main__':
    main()
