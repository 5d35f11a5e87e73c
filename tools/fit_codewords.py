"""Fit letKD's codewords: run the trained teacher over the training set, fit k-means codewords (penultimate level)
and LDA + per-class sub-classes (intermediate level), and save them to the file the config names.

    python tools/fit_codewords.py CONFIG [--out FILE] [--device cpu|cuda] [--max-images N] [--max-vectors N]
                                  [--batch-size N] [--workers N] [--iters 30] [--seed 0] [--augment]
                                  [--cfg-options k=v ...]

CONFIG is a letKD distillation config (``kdplug.Distiller`` with a teacher network, e.g. ``CheckpointTeacher``, and
``LetKDLoss`` losses). For each letKD loss the tool reads the teacher's feature at ``teacher_stage`` (a position of the
teacher's backbone, recorded by the task: ``task.features``), average-pooled to the student layer's spatial size (when
they differ), on every spatial position of the training images (the test pipeline: no augmentation, unless
``--augment``); a random subset of at most ``--max-vectors`` positions per stage is kept (default 1M, enough for
K = 4096). Then:

* ``level='penultimate'``: k-means with K = the student layer's ``num_codewords`` (4096 in the paper);
* ``level='intermediate'``: LDA on the (position, image label) pairs, then k-means with K_inter =
  ``num_codewords / num_classes`` sub-classes per class (8 in the paper) in the LDA space, and the sub-class
  score matrix.

The file (``torch.save`` of tensors, strings and numbers: loadable with ``weights_only=True``) is written to
``--out`` or, by default, to the ``codewords`` path of each loss. Training reads it at its first step. On a GPU
(``--device cuda``, the default when one is present) the full CIFAR-100 / Tiny-ImageNet training sets take a few
minutes; on CPU use ``--max-images`` / ``--max-vectors`` for small runs.
"""
import argparse
import copy
import math
import os
import sys
import time
from typing import Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run from a checkout without installing kdplug
    sys.path.insert(0, REPO)


def log(message: str) -> None:
    print(f'[fit_codewords] {message}', flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a letKD distillation config (kdplug.Distiller with LetKDLoss losses)')
    parser.add_argument('--out', help='the codewords file to write (default: the codewords path of the config)')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--max-images', type=int, default=None, help='use at most N training images (random)')
    parser.add_argument('--max-vectors', type=int, default=1_000_000,
                        help='keep at most N feature vectors (spatial positions) per stage for the fit')
    parser.add_argument('--batch-size', type=int, default=None, help='batch size of the teacher (default: config)')
    parser.add_argument('--workers', type=int, default=None, help='dataloader workers (default: config)')
    parser.add_argument('--iters', type=int, default=30, help='k-means iterations at most')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--augment', action='store_true', help='use the training pipeline (random augmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.teacher.checkpoint=teacher.pth')
    return parser.parse_args(argv)


def _letkd_specs(model, out: Optional[str]) -> List[dict]:
    from kdplug.models.letkd import LetKDLoss
    from kdplug.models.student_modules import student_modules
    modules = student_modules(model.student)
    classes = model.task.num_classes(model.student)
    specs = []
    for name, loss in model.losses.items():
        if not isinstance(loss, LetKDLoss):
            continue
        layer = modules[loss.student_module]
        path = out or loss.codewords_path
        if not path:
            raise SystemExit(f'loss {name!r} names no codewords file: set its codewords= or pass --out')
        spec = dict(name=name, module=loss.student_module, stage=loss.teacher_stage, level=loss.level, path=path,
                    layer=layer, k=layer.num_codewords)
        if loss.level == 'intermediate':
            if not classes or layer.num_codewords % classes:
                raise SystemExit(f'loss {name!r}: the intermediate layer at {loss.student_module!r} predicts '
                                 f'{layer.num_codewords} sub-classes, not a multiple of the {classes} classes: set its '
                                 'num_codewords to num_classes * K_inter (e.g. 100 * 8)')
            spec.update(k=layer.num_codewords // classes, num_classes=classes)
        specs.append(spec)
    if not specs:
        raise SystemExit('the config has no LetKDLoss: fit_codewords is for letKD configs (configs/letkd/)')
    return specs


def build_loader(cfg, batch_size: Optional[int], workers: Optional[int], seed: int, augment: bool):
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    if not augment:
        for other in ('test_dataloader', 'val_dataloader'):
            pipeline = (cfg.get(other) or {}).get('dataset', {}).get('pipeline')
            if pipeline is not None and 'pipeline' in loader_cfg.dataset:  # not a dataset wrapper
                loader_cfg.dataset.pipeline = copy.deepcopy(pipeline)
                break
    if batch_size:
        loader_cfg.batch_size = batch_size
    if workers is not None:
        loader_cfg.num_workers = workers
    if loader_cfg.get('num_workers', 0) == 0:
        loader_cfg.persistent_workers = False
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=True, seed=seed)
    return Runner.build_dataloader(loader_cfg, seed=seed)


@torch.no_grad()
def _student_sizes(model, inputs: torch.Tensor, specs: List[dict]) -> None:
    """The spatial size of the feature each student layer sees (the teacher's is pooled to it)."""
    sizes = {}
    handles = [spec['layer'].register_forward_pre_hook(
        lambda _m, args, module=spec['module']: sizes.__setitem__(module, tuple(args[0].shape[-2:])))
        for spec in specs]
    was_training = model.student.training
    model.student.eval()
    try:
        model.student.extract_feat(inputs)
    finally:
        model.student.train(was_training)
        for handle in handles:
            handle.remove()
    for spec in specs:
        spec['size'] = sizes[spec['module']]


@torch.no_grad()
def collect(model, loader, specs: List[dict], device: torch.device, max_images: Optional[int], max_vectors: int,
            seed: int) -> None:
    """Teacher features (subsampled positions) and their image labels, into ``spec['x']`` / ``spec['y']``."""
    from kdplug.models.letkd import align_teacher_feature, rows
    from kdplug.tasks.classification import targets
    total = len(loader.dataset) if max_images is None else min(max_images, len(loader.dataset))
    generator = torch.Generator().manual_seed(seed)
    stages = sorted({spec['stage'] for spec in specs})
    chunks: Dict[int, list] = {i: [] for i in range(len(specs))}
    seen, start, next_report = 0, time.time(), 0.0
    for batch in loader:
        if seen >= total:
            break
        data = model.data_preprocessor(batch, False)
        inputs = data['inputs'].to(device)
        labels = targets(data['data_samples'])
        labels = (labels.argmax(1) if labels.dim() == 2 else labels).long().cpu()
        take = min(len(inputs), total - seen)
        inputs, labels = inputs[:take], labels[:take]
        if 'size' not in specs[0]:
            _student_sizes(model, inputs, specs)
        feats = model.task.features(model.teacher_model, inputs, stages)
        for i, spec in enumerate(specs):
            feature = align_teacher_feature(feats[spec['stage']].float(), spec['size'])
            positions = feature.shape[2] * feature.shape[3]
            keep_fraction = min(1.0, max_vectors / (total * positions))
            x = rows(feature).cpu()
            y = labels.repeat_interleave(positions)
            if keep_fraction < 1.0:
                keep = torch.rand(len(x), generator=generator) < keep_fraction
                x, y = x[keep], y[keep]
            chunks[i].append((x, y))
        seen += take
        if seen / total >= next_report or seen >= total:
            elapsed = time.time() - start
            left = f', about {elapsed * (total - seen) / seen:.0f} s left' if seen < total else ''
            log(f'teacher features: {seen}/{total} images ({elapsed:.0f} s{left})')
            next_report = math.floor(seen / total * 10 + 1) / 10
    if seen == 0:
        raise SystemExit('the training dataloader yielded no images: check train_dataloader.dataset (data_root)')
    for i, spec in enumerate(specs):
        spec['x'] = torch.cat([x for x, _ in chunks[i]])
        spec['y'] = torch.cat([y for _, y in chunks[i]])
        spec['num_images'] = seen


def fit(spec: dict, device: torch.device, iters: int, seed: int) -> dict:
    """The section of the codewords file for one letKD loss."""
    from kdplug.models import codewords
    x, y = spec['x'].to(device), spec['y'].to(device)
    section = {'level': spec['level'], 'teacher_stage': spec['stage'], 'num_vectors': int(len(x)),
               'num_images': int(spec['num_images'])}
    log(f'{spec["name"]} ({spec["level"]}, student module {spec["module"]!r}, teacher stage {spec["stage"]!r}): '
        f'{len(x)} feature vectors of dimension {x.shape[1]}')
    if spec['level'] == 'penultimate':
        centers, _ = codewords.kmeans(x, spec['k'], iters=iters, seed=seed, log=log)
        section['codewords'] = centers.cpu()
        return section
    weight, bias = codewords.fit_lda(x, y, spec['num_classes'])
    log(f'LDA: {weight.shape[1]} -> {weight.shape[0]} dimensions')
    z = x @ weight.t() + bias
    prototypes, valid = codewords.fit_subclasses(z, y, spec['num_classes'], spec['k'], iters=iters, seed=seed, log=log)
    scores = codewords.subclass_scores(z, y, prototypes, valid, spec['k'])
    section.update(lda_weight=weight.cpu(), lda_bias=bias.cpu(), prototypes=prototypes.cpu(), valid=valid.cpu(),
                   scores=scores.cpu(), subclasses=int(spec['k']))
    return section


def build_model(cfg, device: torch.device):
    """The distiller of ``cfg`` (teacher loaded) with the run's data preprocessor, as the Runner builds it; in the
    current default scope, in eval mode on ``device``."""
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    if getattr(model, 'teacher_model', None) is None:
        raise SystemExit(f'the model of {cfg.filename or "the config"} ({type(model).__name__}) has no teacher '
                         'network to read features from: fit_codewords is for letKD configs (configs/letkd/), a '
                         'kdplug.Distiller with teacher=dict(type="CheckpointTeacher", model=..., checkpoint=...)')
    return model.to(device).eval()


def teacher_checkpoint(cfg) -> Optional[str]:
    """The checkpoint of the config's teacher (``model.teacher.checkpoint``), or None (e.g. an EMA teacher)."""
    teacher = cfg.model.get('teacher')
    return teacher.get('checkpoint') if isinstance(teacher, dict) else None


def fit_codewords(cfg, out: Optional[str] = None, device: Optional[str] = None, max_images: Optional[int] = None,
                  max_vectors: int = 1_000_000, batch_size: Optional[int] = None, workers: Optional[int] = None,
                  iters: int = 30, seed: int = 0, augment: bool = False) -> Dict[str, dict]:
    """Fit and write the codewords of every LetKDLoss of ``cfg`` (an mmengine Config); returns path -> contents."""
    from mmengine.registry import DefaultScope
    from kdplug.models.letkd import CODEWORDS_FORMAT
    torch.manual_seed(seed)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        model = build_model(cfg, device)
        specs = _letkd_specs(model, out)
        loader = build_loader(cfg, batch_size, workers, seed, augment)
        log(f'teacher {type(model.teacher_model.backbone).__name__} from {teacher_checkpoint(cfg)!r} on {device}; '
            f'{len(loader.dataset)} training images, {"training" if augment else "test"} pipeline')
        collect(model, loader, specs, device, max_images, max_vectors, seed)
    files: Dict[str, dict] = {}
    for spec in specs:
        start = time.time()
        section = fit(spec, device, iters, seed)
        log(f'{spec["name"]}: fitted in {time.time() - start:.1f} s')
        files.setdefault(spec['path'], {'format': CODEWORDS_FORMAT, 'sections': {}, 'meta': {
            'config': str(cfg.filename) if cfg.filename else '', 'teacher_checkpoint': str(teacher_checkpoint(cfg)),
            'seed': seed, 'augment': augment, 'created': time.strftime('%Y-%m-%d %H:%M:%S')}})
        files[spec['path']]['sections'][spec['module']] = section
    for path, contents in files.items():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.save(contents, path)
        log(f'wrote {path}: ' + ', '.join(f'{module} ({s["level"]})' for module, s in contents['sections'].items()))
    if out:
        configured = {spec['name']: model.losses[spec['name']].codewords_path for spec in specs}
        differing = [name for name, path in configured.items() if path != out]
        if differing:
            log('the config names another file; train with --cfg-options ' +
                ' '.join(f'model.losses.{name}.codewords={out}' for name in differing))
    return files


def main(argv=None) -> None:
    from mmengine.config import Config
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    fit_codewords(cfg, out=args.out, device=args.device, max_images=args.max_images, max_vectors=args.max_vectors,
                  batch_size=args.batch_size, workers=args.workers, iters=args.iters, seed=args.seed,
                  augment=args.augment)


if __name__ == '__main__':
    main()
