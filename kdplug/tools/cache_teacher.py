"""Compute a teacher's logits over a training set once, for every view of every image, into a teacher cache.

    python tools/cache_teacher.py CONFIG [--out DIR] [--dtype float16|float32] [--batch-size 256] [--device cpu]

Mode ``epochs`` (for continuous transforms such as RandomResizedCrop, or a short schedule): the views a run draws in
``--epochs`` epochs with the config's seed, sampler, batch size and workers (kdplug's tools/train.py dataloader
defaults applied, as a run through it gets), in as many processes as it runs with (under ``--launcher pytorch``
each rank draws and scores its shard of every epoch, as the run's rank will): exact when the students run with the
same seed, world size and dataloader settings; a student whose views differ stops at its first step that meets one.

CONFIG is a distillation config whose teacher is ``dict(type='CheckpointTeacher', model=..., checkpoint=...)`` (the
shipped classification configs but MLKD's, whose students see two augmentations of each image, and letKD's, which
learn from the teacher's features; detection's RoIs are picked by the student at each step, so no store serves them:
:func:`kdplug.teachers.cached.check_cacheable`; the tool ends by printing the ``--cfg-options`` that make the same
config read the store), or the ``CachedTeacher`` config that will read the store (then ``--out`` defaults to its
``store``), with a training pipeline of kdplug's replayable transforms (``kdplug.ReplayRandomCrop``,
``kdplug.ReplayRandomFlip``) and ``PackInputs(meta_keys=(..., 'sample_idx', 'view'))``. Mode ``views``: each image's
discrete views (CIFAR's pad-4 crop x flip: 9 x 9 x 2 = 162) are all scored, so the store serves any epoch of any
seed. The store (``--out``, default the CachedTeacher's ``store`` or ``<work_dir>/teacher_cache``; see
kdplug/teachers/cache_store.py) is read by ``teacher=dict(type='CachedTeacher', store=DIR, model=...,
checkpoint=...)``.

A killed job resumes at the first image (views) or epoch (epochs, per rank) not written: run the same command again.
Under ``--launcher pytorch`` each rank scores its own images in views mode (rank r: images r, r + world, ...), its
shard of each epoch in epochs mode; the process group uses the config's ``env_cfg.dist_cfg`` (e.g. ``backend``).
Prints the size of the store and the time.
"""
import argparse
import copy
import itertools
import os.path as osp
import shlex
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import DictAction

from kdplug.engine.allocator import keep_freed_memory
from kdplug.engine.checkpoint import allow_mmengine_checkpoints
from kdplug.tools import check_kdplug_types, check_launcher, name_damaged_images, read_config
from kdplug.tools.config_keys import check_runner_keys


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--out', help='the store folder (default: the store of a CachedTeacher config, else '
                        '<work_dir>/teacher_cache)')
    parser.add_argument('--mode', choices=['views', 'epochs'], default='views',
                        help='views: every discrete view of each image (pad-and-crop x flip); epochs: the views a run '
                             'with the config\'s seed, sampler and workers draws in --epochs epochs')
    parser.add_argument('--epochs', type=int, help='epochs mode: how many (default: train_cfg.max_epochs)')
    parser.add_argument('--seed', type=int, help='epochs mode: the run\'s seed (default: randomness.seed)')
    parser.add_argument('--dtype', choices=['float16', 'float32'], default='float16')
    parser.add_argument('--batch-size', type=int, default=256, help='views per teacher forward')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def replayable_split(transforms: Sequence, mode: str = 'views') -> Tuple[List, List]:
    """The pipeline as (what runs once per image, what runs per view); refuses random transforms that cannot be
    replayed, a continuous one in views mode, and a PackInputs that would drop the view."""
    from kdplug.transforms.replay import REPLAYABLE, ReplayRandomResizedCrop
    replay_types = tuple(REPLAYABLE.values())
    names = [type(t).__name__ for t in transforms]
    if 'MultiView' in names:
        raise ValueError(f'the training pipeline {names} gives each image several augmented views (MultiView): the '
                         'cached teacher serves one view per image; distil with the online teacher')
    unreplayable = [n for t, n in zip(transforms, names) if not isinstance(t, replay_types)
                    and (n.startswith('Random') or n in ('AutoAugment', 'RandAugment', 'ColorJitter', 'Lighting'))]
    if unreplayable:
        stand_ins = {n: f'kdplug.{REPLAYABLE[n].__name__}' for n in unreplayable if n in REPLAYABLE}
        raise ValueError(f'the training pipeline has random transforms whose views cannot be replayed: '
                         f'{unreplayable}. Use kdplug\'s replayable ones ({stand_ins or "none for these"}), or '
                         'distil with the online teacher')
    if mode == 'views' and any(isinstance(t, ReplayRandomResizedCrop) for t in transforms):
        raise ValueError('RandomResizedCrop draws from a continuous range: --mode views cannot list its views; cache '
                         'the views of seeded epochs with --mode epochs')
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
    probe, choices = dict(results), []
    for transform in per_view[:-1]:  # the last one packs
        if isinstance(transform, replay_types):
            options = transform.choices(probe)
            choices.append((transform.name, options))
            probe['replay_view'] = dict(probe.get('replay_view', {}), **{transform.name: options[0]})
        probe = transform(probe)
    names = [name for name, _ in choices]
    return [dict(zip(names, combo)) for combo in itertools.product(*[options for _, options in choices])]


class Setup:
    """What both modes share: the teacher, its task and preprocessor, the training set and the store's header."""

    def __init__(self, args: argparse.Namespace) -> None:
        from mmengine.registry import DATASETS, init_default_scope

        from kdplug.registry import MODELS
        from kdplug.teachers.cache_store import TeacherCacheError
        from kdplug.teachers.cached import check_cacheable, made_from
        from kdplug.teachers.base import evaluating_the_student
        from kdplug.teachers.checkpoint import CheckpointTeacher
        cfg = read_config(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        name_damaged_images(cfg)  # as tools/train.py: the store's pipeline is the students'
        check_kdplug_types(cfg)
        check_runner_keys(cfg)
        if 'teacher' not in cfg.model:  # a teacher's own config: the registry said ImageClassifier is unknown
            raise SystemExit(f'cache_teacher.py: {args.config} is not a distillation config (its model has no '
                             'teacher): give the distillation config whose model.teacher is the CheckpointTeacher to '
                             'cache, e.g. configs/kd/...; the teacher\'s own config trains the teacher')
        teacher_cfg = cfg.model.get('teacher') or {}
        store = None
        self.reads_store = str(teacher_cfg.get('type', '')).split('.')[-1] == 'CachedTeacher'
        if self.reads_store:  # the config that will read the store
            store = teacher_cfg['store']
            cfg.model.teacher = dict(type='CheckpointTeacher', model=teacher_cfg['model'],
                                     checkpoint=teacher_cfg['checkpoint'])
        self.config_store = store
        if cfg.get('data_preprocessor') is not None:  # as mmengine's Runner gives the model the run's preprocessor
            cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
        with evaluating_the_student():  # the teacher's checkpoint is read below, once the config can be cached
            distiller = MODELS.build(cfg.model)
        if not isinstance(distiller.teacher, CheckpointTeacher):
            raise SystemExit(f'cache_teacher.py: the config\'s teacher is {distiller.teacher.description}: give '
                             "teacher=dict(type='CheckpointTeacher' (or 'CachedTeacher'), model=..., checkpoint=...)")
        try:  # before anything is loaded or scored: a store that no student of this config could read
            check_cacheable(distiller.task, distiller.module_losses)
        except TeacherCacheError as err:
            raise SystemExit(f'cache_teacher.py: {args.config} cannot train from a teacher cache: {err}') from None
        distiller.teacher.setup(distiller.task, distiller.student, distiller.data_preprocessor)
        self.device = torch.device(args.device)
        self.cfg, self.task = cfg, distiller.task
        self.teacher = distiller.teacher_model.to(self.device).eval()
        self.preprocess = distiller.data_preprocessor.to(self.device)
        self.dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
        try:
            self.once, self.per_view = replayable_split(self.dataset.pipeline.transforms, args.mode)
        except ValueError as err:
            raise SystemExit(f'cache_teacher.py: {err}') from None
        self.out = args.out or store or osp.join(cfg.get('work_dir') or osp.join(
            'work_dirs', osp.splitext(osp.basename(args.config))[0]), 'teacher_cache')
        self.header = dict(mode=args.mode, num_images=len(self.dataset), dtype=args.dtype,
                           num_classes=int(self.task.num_classes(self.teacher)),
                           made_from=made_from(self.task, cfg.model.teacher.model, cfg.model.teacher.checkpoint,
                                               self.preprocess),
                           pipeline=[dict(t) for t in cfg.train_dataloader.dataset.pipeline],
                           dataset={k: v for k, v in cfg.train_dataloader.dataset.items() if k != 'pipeline'},
                           classes=list(self.dataset.metainfo.get('classes') or []))

    def images(self) -> Tuple[List[str], List[List[int]]]:
        """Each image's file and label(s), what a run's images are checked against; no files for a dataset held as
        arrays (mmpretrain's CIFAR10 / CIFAR100), no labels for one without."""
        infos = [self.dataset.get_data_info(i) for i in range(len(self.dataset))]
        paths = [info['img_path'] for info in infos] if all('img_path' in info for info in infos) else []
        labels = [np.atleast_1d(info['gt_label']).tolist() for info in infos] \
            if all('gt_label' in info for info in infos) else []
        return paths, labels

    def train_command(self, args: argparse.Namespace, world_size: int = 1) -> str:
        """How to train from the store: the config with this job's ``--cfg-options`` (and ``--seed``), and when its
        teacher is a CheckpointTeacher, two more that make it a CachedTeacher of the same model and checkpoint; an
        epochs-mode store made by ``world_size`` processes trains through tools/dist_train.sh with as many."""
        options = dict(args.cfg_options or {})
        if args.mode == 'epochs' and args.seed is not None:  # the seed the views were drawn with
            options['randomness.seed'] = args.seed
        if args.mode == 'epochs' and args.epochs is not None:  # the epochs it holds: a longer run is refused
            options['train_cfg.max_epochs'] = args.epochs
        if not self.reads_store:
            options.update({'model.teacher.type': 'CachedTeacher', 'model.teacher.store': self.out})
        elif self.out != self.config_store:  # --out elsewhere than the CachedTeacher's own store
            options['model.teacher.store'] = self.out
        command = f'python tools/train.py {shlex.quote(args.config)}'
        if args.mode == 'epochs' and world_size > 1:  # each rank's shard of every epoch: a run of as many ranks
            command = f'bash tools/dist_train.sh {shlex.quote(args.config)} {world_size}'
        if options:
            command += ' --cfg-options ' + ' '.join(shlex.quote(f'{key}={value}') for key, value in options.items())
        return command

    @torch.no_grad()
    def logits(self, packed: List[dict]) -> np.ndarray:
        """The teacher's logits (float32, on the CPU) of packed samples (PackInputs' output)."""
        data = self.preprocess(dict(inputs=[p['inputs'] for p in packed],
                                    data_samples=[p['data_samples'] for p in packed]), training=False)
        return self.task.tensor_forward(self.teacher, data['inputs'], None).float().cpu().numpy()


def shared_store(setup: Setup, header: Dict) -> object:
    """The store every rank writes into: rank 0 makes it (or finds the one a killed job left), then the others
    open it."""
    from mmengine.dist import barrier, get_dist_info

    from kdplug.teachers.cache_store import TeacherCacheStore
    if get_dist_info()[0] == 0:
        TeacherCacheStore.create(setup.out, header, *setup.images())
    if get_dist_info()[1] > 1:
        barrier()
    return TeacherCacheStore.create(setup.out, header)


def cache_views(setup: Setup, args: argparse.Namespace) -> Tuple[object, int]:
    """Views mode: every discrete view of this rank's images; returns (store, views scored here)."""
    from mmengine.dist import get_dist_info
    from mmengine.utils import ProgressBar

    from kdplug.teachers.cache_store import view_layout, view_vector
    rank, world = get_dist_info()
    first = run(setup.once, setup.dataset.get_data_info(0))
    views = views_of(setup.per_view, first)
    layout = view_layout(run(setup.per_view, dict(first, replay_view=views[0]))['data_samples'].metainfo['view'])
    store = shared_store(setup, dict(setup.header, slots=len(views), layout=layout))
    total = len(setup.dataset)
    todo = [i for i in range(rank, total, world) if not store.done[i]]
    print(f'cache_teacher.py: {total} images x {len(views)} views -> {setup.out} ({args.dtype}); rank {rank}/{world}: '
          f'{len(todo)} images to score ({len(range(rank, total, world)) - len(todo)} already done)', flush=True)
    bar = ProgressBar(len(todo)) if todo and rank == 0 else None  # one bar: the ranks' would share a line
    pending: List[Tuple[int, list, list]] = []   # (image, packed views, params) waiting for a forward
    batch_views = max(1, args.batch_size // len(views)) * len(views)

    def score(items: List[Tuple[int, list, list]]) -> None:
        logits = setup.logits([p for _, packed, _ in items for p in packed])
        for k, (index, _, params) in enumerate(items):
            store.write(index, logits[k * len(views):(k + 1) * len(views)], np.asarray(params, dtype=np.int32))
        store.flush()
        for _ in items if bar is not None else ():
            bar.update()

    for index in todo:
        results = run(setup.once, setup.dataset.get_data_info(index))
        image_views = views_of(setup.per_view, results)
        if len(image_views) != len(views):
            raise SystemExit(f'cache_teacher.py: image {index} has {len(image_views)} views, image 0 {len(views)}: '
                             'views mode needs images of one size (resize them first, or use --mode epochs)')
        # a shallow copy per view: the transforms replace results' entries, never write into the decoded image
        packed = [run(setup.per_view, dict(results, replay_view=view)) for view in image_views]
        pending.append((index, packed, [view_vector(p['data_samples'].metainfo['view'], layout) for p in packed]))
        if len(pending) * len(views) >= batch_views:
            score(pending)
            pending = []
    if pending:
        score(pending)
    return store, len(todo) * len(views)


def epoch_occurrences(dataloader_cfg: dict, images: int, world: int) -> int:
    """How often one image can come up in one epoch over all ranks: 1, or 2 where mmengine's DefaultSampler pads
    the epoch to a multiple of the world size with images already drawn (round_up)."""
    sampler = dict(dataloader_cfg.get('sampler') or {})
    if world > 1 and str(sampler.get('type', '')).split('.')[-1] != 'DefaultSampler':
        raise SystemExit(f'cache_teacher.py: --mode epochs under a launcher replays mmengine\'s DefaultSampler, which '
                         f'shards each epoch across the ranks; the config\'s sampler is {sampler.get("type")!r}: run '
                         'it in one process (and the students too), or use --mode views')
    if world == 1 or not sampler.get('round_up', True):
        return 1
    return -(-(-(-images // world) * world) // images)  # ceil(ceil(images / world) * world / images)


def cache_epochs(setup: Setup, args: argparse.Namespace) -> Tuple[object, int]:
    """Epochs mode: the views of ``--epochs`` seeded epochs, as the run's own dataloader draws them on this rank;
    returns (store, views scored here). The slot of a view is its epoch (times the epoch's occurrences of an image:
    the DefaultSampler's padding draws a few images twice); each rank marks its own part of each epoch done."""
    from mmengine.dist import get_dist_info
    from mmengine.runner import Runner, set_random_seed
    from mmengine.utils import ProgressBar

    from kdplug.teachers.cache_store import view_layout, view_vector
    from kdplug.tools.train import set_dataloader_defaults
    rank, world = get_dist_info()
    cfg = setup.cfg
    randomness = cfg.get('randomness') or {}
    seed = args.seed if args.seed is not None else randomness.get('seed')
    epochs = args.epochs or cfg.get('train_cfg', {}).get('max_epochs')
    if seed is None or not epochs:
        raise SystemExit('cache_teacher.py: --mode epochs replays a seeded run: set randomness.seed (or --seed) and '
                         'train_cfg.max_epochs (or --epochs), and train the students with the same seed')
    set_dataloader_defaults(cfg, argparse.Namespace(no_pin_memory=False, no_persistent_workers=False))
    images = len(setup.dataset)
    occurrences = epoch_occurrences(cfg.train_dataloader, images, world)
    # the layout from one draw on image 0, the generator restored: the run's draws are untouched
    state = np.random.get_state()
    probe = run(setup.per_view, run(setup.once, setup.dataset.get_data_info(0)))
    np.random.set_state(state)
    layout = view_layout(probe['data_samples'].metainfo['view'])
    store = shared_store(setup, dict(setup.header, slots=int(epochs) * occurrences, layout=layout, seed=int(seed),
                                     epochs=int(epochs), world_size=world))
    todo = [e for e in range(epochs) if not store.done[e * world + rank]]
    print(f'cache_teacher.py: {images} images x {epochs} seeded epochs (seed {seed}) -> {setup.out} ({args.dtype}); '
          f'rank {rank}/{world}: {len(todo)} epochs to score ({epochs - len(todo)} already done)', flush=True)
    diff_rank_seed = randomness.get('diff_rank_seed', False)
    # as the Runner seeds the run (set_randomness) and builds its training dataloader (with the seed it returns)
    run_seed = set_random_seed(seed, deterministic=randomness.get('deterministic', False),
                               diff_rank_seed=diff_rank_seed)
    loader = Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=run_seed, diff_rank_seed=diff_rank_seed)
    bar = ProgressBar(len(todo) * len(loader)) if todo and rank == 0 else None  # one bar: rank 0's
    scored = 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # as mmengine's DistSamplerSeedHook does before each epoch
        drawn = 0  # this rank's draws in the epoch: the j-th is position rank + world * j of the (padded) epoch
        for batch in loader:  # an epoch already done is still drawn: the workers' generators must advance
            samples = batch['data_samples']
            positions = rank + world * (drawn + np.arange(len(samples)))
            drawn += len(samples)
            if epoch not in todo:
                continue
            logits = setup.logits([dict(inputs=x, data_samples=d) for x, d in zip(batch['inputs'], samples)])
            params = np.asarray([view_vector(d.metainfo['view'], layout) for d in samples], dtype=np.int32)
            slots = epoch * occurrences + np.minimum(positions // images, occurrences - 1)
            store.write_rows([d.metainfo['sample_idx'] for d in samples], slots, logits, params)
            scored += len(samples)
            if bar is not None:
                bar.update()
        if epoch in todo:
            store.flush()
            store.done_unit(epoch * world + rank)
            store.flush()
    return store, scored


def main(argv: Optional[Sequence[str]] = None) -> None:
    from mmengine.dist import get_dist_info, init_dist

    from kdplug.teachers.cache_store import TeacherCacheStore
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    keep_freed_memory()  # as tools/train.py: the teacher's activations are not faulted in again at every batch
    check_launcher(args.launcher)
    if args.launcher != 'none':  # with the config's dist_cfg (e.g. backend='gloo'), as the Runner initialises it
        cfg = read_config(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        init_dist(args.launcher, **(cfg.get('env_cfg') or {}).get('dist_cfg', {}))
    start = time.time()
    setup = Setup(args)
    store, scored = (cache_views if args.mode == 'views' else cache_epochs)(setup, args)
    if get_dist_info()[1] > 1:
        from mmengine.dist import barrier
        barrier()
    if get_dist_info()[0] == 0:
        store = TeacherCacheStore.create(setup.out, store.header)
        store.mark_complete()
        seconds = time.time() - start
        print(f'\ncache_teacher.py: {store.num_images * store.slots} rows of {store.header["num_classes"]} logits; '
              f'{scored} views scored in {seconds:.1f} s ({scored / max(seconds, 1e-9):.0f} views/s on rank 0): '
              f'{store.size_bytes() / 2 ** 20:.1f} MiB in {setup.out}\ntrain from it: '
              f'{setup.train_command(args, get_dist_info()[1])}'
              + (' (same seed, number of processes and dataloader settings)' if args.mode == 'epochs' else ''),
              flush=True)


if __name__ == '__main__':
    main()
