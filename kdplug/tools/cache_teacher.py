"""Compute a teacher's logits over a training set once, for every view of every image, into a teacher cache.

    python tools/cache_teacher.py CONFIG [--out DIR] [--dtype float16|float32] [--batch-size 256] [--device cpu]

CONFIG is a distillation config whose teacher is ``dict(type='CheckpointTeacher', model=..., checkpoint=...)``, or
the ``CachedTeacher`` config that will read the store (then ``--out`` defaults to its ``store``), with a
training pipeline of kdplug's replayable transforms (``kdplug.ReplayRandomCrop``, ``kdplug.ReplayRandomFlip``) with
``PackInputs(meta_keys=(..., 'sample_idx', 'view'))``. Mode ``views``: each image's discrete views (CIFAR's pad-4
crop x flip: 9 x 9 x 2 = 162) are all scored, so the store serves any epoch of any seed. The store (``--out``,
default the CachedTeacher's ``store`` or ``<work_dir>/teacher_cache``; see kdplug/teachers/cache_store.py) is read
by ``teacher=dict(type='CachedTeacher', store=DIR, model=..., checkpoint=...)``.

A killed job resumes at the first image not written (run the same command again). Under ``--launcher pytorch``
each rank scores its own images (rank r: images r, r + world, ...). Prints the size of the store and the time.
"""
import argparse
import copy
import itertools
import os.path as osp
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction

from kdplug.engine.checkpoint import allow_mmengine_checkpoints


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--out', help='the store folder (default: <work_dir>/teacher_cache)')
    parser.add_argument('--mode', choices=['views'], default='views',
                        help='views: every discrete view of each image (pad-and-crop x flip)')
    parser.add_argument('--dtype', choices=['float16', 'float32'], default='float16')
    parser.add_argument('--batch-size', type=int, default=256, help='views per teacher forward')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def replayable_split(transforms: Sequence) -> Tuple[List, List]:
    """The pipeline as (what runs once per image, what runs per view); refuses random transforms that cannot be
    replayed and a PackInputs that would drop the view."""
    from kdplug.transforms.replay import REPLAYABLE, ReplayRandomResizedCrop
    replay_types = tuple(REPLAYABLE.values())
    names = [type(t).__name__ for t in transforms]
    unreplayable = [n for t, n in zip(transforms, names) if not isinstance(t, replay_types)
                    and (n.startswith('Random') or n in ('AutoAugment', 'RandAugment', 'ColorJitter', 'Lighting'))]
    if unreplayable:
        stand_ins = {n: f'kdplug.{REPLAYABLE[n].__name__}' for n in unreplayable if n in REPLAYABLE}
        raise ValueError(f'the training pipeline has random transforms whose views cannot be replayed: '
                         f'{unreplayable}. Use kdplug\'s replayable ones ({stand_ins or "none for these"}), or '
                         'distil with the online teacher')
    if any(isinstance(t, ReplayRandomResizedCrop) for t in transforms):
        raise ValueError('RandomResizedCrop draws from a continuous range: --mode views cannot list its views')
    first = next((i for i, t in enumerate(transforms) if isinstance(t, replay_types)), None)
    if first is None:
        raise ValueError(f'the training pipeline {names} has no replayable transform: nothing to cache per view')
    pack = transforms[-1]
    missing = [k for k in ('sample_idx', 'view') if k not in getattr(pack, 'meta_keys', ())]
    if missing:
        raise ValueError(f'{names[-1]} drops {missing}: give it meta_keys=(..., \'sample_idx\', \'view\') so that '
                         'the cached teacher can find each image\'s view')
    return list(transforms[:first]), list(transforms[first:])


def run(transforms: Sequence, results: dict) -> dict:
    for transform in transforms:
        results = transform(results)
    return results


def views_of(per_view: Sequence, results: dict) -> List[Dict[str, tuple]]:
    """Every combination of the replayable transforms' choices for this image, as replay dicts."""
    from kdplug.transforms.replay import REPLAYABLE
    replay_types = tuple(REPLAYABLE.values())
    probe, choices = copy.deepcopy(results), []
    for transform in per_view[:-1]:  # the last one packs
        if isinstance(transform, replay_types):
            options = transform.choices(probe)
            choices.append((transform.name, options))
            probe['replay_view'] = dict(probe.get('replay_view', {}), **{transform.name: options[0]})
        probe = transform(probe)
    names = [name for name, _ in choices]
    return [dict(zip(names, combo)) for combo in itertools.product(*[options for _, options in choices])]


def main(argv=None) -> None:
    from mmengine.dist import get_dist_info, init_dist
    from mmengine.registry import DATASETS, init_default_scope

    from kdplug.registry import MODELS
    from kdplug.teachers.cache_store import TeacherCacheStore, view_layout, view_vector
    from kdplug.teachers.cached import made_from
    from kdplug.teachers.checkpoint import CheckpointTeacher

    args = parse_args(argv)
    allow_mmengine_checkpoints()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.launcher != 'none':
        init_dist(args.launcher)
    rank, world = get_dist_info()
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    start = time.time()
    teacher_cfg = cfg.model.get('teacher') or {}
    store_default = None
    if str(teacher_cfg.get('type', '')).split('.')[-1] == 'CachedTeacher':  # the config that will read the store
        store_default = teacher_cfg['store']
        cfg.model.teacher = dict(type='CheckpointTeacher', model=teacher_cfg['model'],
                                 checkpoint=teacher_cfg['checkpoint'])
    if cfg.get('data_preprocessor') is not None:  # as mmengine's Runner gives the model the run's preprocessor
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    distiller = MODELS.build(cfg.model)
    if not isinstance(distiller.teacher, CheckpointTeacher):
        raise SystemExit(f'cache_teacher.py: the config\'s teacher is {distiller.teacher.description}: give '
                         "teacher=dict(type='CheckpointTeacher' (or 'CachedTeacher'), model=..., checkpoint=...)")
    device = torch.device(args.device)
    teacher, task, preprocess = distiller.teacher_model.to(device).eval(), distiller.task, \
        distiller.data_preprocessor.to(device)
    dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    try:
        once, per_view = replayable_split(dataset.pipeline.transforms)
    except ValueError as err:
        raise SystemExit(f'cache_teacher.py: {err}') from None

    first = run(once, dataset.get_data_info(0))
    views = views_of(per_view, first)
    sample = run(per_view, dict(copy.deepcopy(first), replay_view=views[0]))
    layout = view_layout(sample['data_samples'].metainfo['view'])
    header = dict(mode=args.mode, slots=len(views), num_images=len(dataset), layout=layout, dtype=args.dtype,
                  num_classes=int(task.num_classes(teacher)),
                  made_from=made_from(task, cfg.model.teacher.model, cfg.model.teacher.checkpoint, preprocess),
                  pipeline=[dict(t) for t in cfg.train_dataloader.dataset.pipeline],
                  dataset={k: v for k, v in cfg.train_dataloader.dataset.items() if k != 'pipeline'},
                  classes=list(dataset.metainfo.get('classes') or []))
    out = args.out or store_default or osp.join(cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0]), 'teacher_cache')
    if rank == 0:
        TeacherCacheStore.create(out, header, [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))])
    if world > 1:
        from mmengine.dist import barrier
        barrier()
    store = TeacherCacheStore.create(out, header)  # opens the one rank 0 made (or a resumed one)
    todo = [i for i in range(rank, len(dataset), world) if not store.done[i]]
    print(f'cache_teacher.py: {len(dataset)} images x {len(views)} views -> {out} ({args.dtype}); rank {rank}/{world}: '
          f'{len(todo)} images to score ({len(range(rank, len(dataset), world)) - len(todo)} already done)',
          flush=True)

    from mmengine.utils import ProgressBar
    bar = ProgressBar(len(todo)) if todo else None
    pending: List[Tuple[int, list, list]] = []   # (image, packed views, params) waiting for a forward
    batch_views = max(1, args.batch_size // len(views)) * len(views)

    @torch.no_grad()
    def score(items: List[Tuple[int, list, list]]) -> None:
        packed = [p for _, views_, _ in items for p in views_]
        data = preprocess(dict(inputs=[p['inputs'] for p in packed], data_samples=[p['data_samples'] for p in packed]),
                          training=False)
        logits = task.tensor_forward(teacher, data['inputs'], None).float().cpu().numpy()
        for k, (index, _, params) in enumerate(items):
            store.write(index, logits[k * len(views):(k + 1) * len(views)], np.asarray(params, dtype=np.int32))
        store.flush()
        if bar is not None:
            for _ in items:
                bar.update()

    for index in todo:
        results = run(once, dataset.get_data_info(index))
        image_views = views_of(per_view, results)
        if len(image_views) != len(views):
            raise SystemExit(f'cache_teacher.py: image {index} has {len(image_views)} views, image 0 {len(views)}: '
                             'views mode needs images of one size (resize them first)')
        packed = [run(per_view, dict(copy.deepcopy(results), replay_view=view)) for view in image_views]
        params = [view_vector(p['data_samples'].metainfo['view'], layout) for p in packed]
        pending.append((index, packed, params))
        if len(pending) * len(views) >= batch_views:
            score(pending)
            pending = []
    if pending:
        score(pending)
    if world > 1:
        from mmengine.dist import barrier
        barrier()
    if rank == 0:
        store = TeacherCacheStore.create(out, header)
        store.mark_complete()
        seconds = time.time() - start
        print(f'\ncache_teacher.py: wrote {len(dataset) * len(views)} rows of {header["num_classes"]} logits in '
              f'{seconds:.1f} s ({len(todo) * len(views) / max(seconds, 1e-9):.0f} views/s on rank 0): '
              f'{store.size_bytes() / 2 ** 20:.1f} MiB in {out}', flush=True)


if __name__ == '__main__':
    main()
