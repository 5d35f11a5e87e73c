"""Fitting letKD's codewords (Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide",
BMVC 2023, arXiv:2309.02843; supplement Alg. 1-2) on a trained teacher's features over a training set.

For each :class:`~kdplug.letkd.loss.LetKDLoss` of a distillation config (``kdplug.Distiller`` with a teacher
network, e.g. ``CheckpointTeacher``): the teacher's feature at the loss's ``teacher_stage``, average-pooled to the
spatial size of the feature the student layer sees (when they differ), at every spatial position of the training
images (the test pipeline: no augmentation, unless ``augment``); a random subset of at most ``max_vectors``
positions per stage is kept (default 1M, enough for K = 4096). Then (:mod:`kdplug.letkd.codewords`):

* ``level='penultimate'``: k-means with K = the student layer's ``num_codewords`` (4096 in the paper);
* ``level='intermediate'``: LDA on the (position, image label) pairs, then k-means with K_inter =
  ``num_codewords / num_classes`` sub-classes per class (8 in the paper) in the LDA space, and the sub-class score
  matrix.

What is model-specific goes through the distiller's task (:class:`kdplug.tasks.base.Task`): ``task.features`` runs
the teacher's backbone with the positions recorded (and the student's, for the size each layer sees),
``task.image_targets`` gives each image's class, ``task.num_classes`` the classes. So every task fits the penultimate
level: classifiers, and two-stage detectors (``TwoStageDetectionTask``: the teacher's backbone features at
``teacher_stage`` over the training images, no labels). The intermediate level needs each image's class, which only
a task with image targets gives (``ClassificationTask``).

:func:`fit_codewords` returns the contents of the files (:mod:`kdplug.letkd.io`); ``tools/fit_codewords.py``
(:mod:`kdplug.tools.fit_codewords`) is the command line that writes them.
"""
import copy
import math
import time
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from kdplug.engine.checkpoint import checkpoint_identity

from . import codewords
from .codewords import Log
from .io import new_codewords_file
from .loss import align_teacher_feature, rows

if TYPE_CHECKING:
    from mmengine.config import Config
    from torch.utils.data import DataLoader


class CodewordsFitError(ValueError):
    """A config the fit cannot use (no letKD loss, no teacher network, no data...); the message says what to do."""


def _silent(_message: str) -> None:
    """No progress messages."""


def build_distiller(cfg: 'Config', device: torch.device) -> nn.Module:
    """The distiller of ``cfg`` (teacher loaded) with the run's data preprocessor, as the Runner builds it; in the
    current default scope, in eval mode on ``device``."""
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    distiller = MODELS.build(model_cfg)
    if getattr(distiller, 'teacher_model', None) is None:
        raise CodewordsFitError(
            f'the model of {cfg.filename or "the config"} ({type(distiller).__name__}) has no teacher network to read '
            'features from: fit_codewords is for letKD configs (configs/letkd/), a kdplug.Distiller with '
            'teacher=dict(type="CheckpointTeacher", model=..., checkpoint=...)')
    return distiller.to(device).eval()


def teacher_checkpoint(cfg: 'Config') -> Optional[str]:
    """The checkpoint of the config's teacher (``model.teacher.checkpoint``), or None (e.g. an EMA teacher)."""
    teacher = cfg.model.get('teacher')
    return teacher.get('checkpoint') if isinstance(teacher, dict) else None


def letkd_specs(distiller: nn.Module, out: Optional[str]) -> List[dict]:
    """One dict per letKD loss of ``distiller``: its name, student module (position and layer), teacher stage,
    level, file (``out`` or the loss's ``codewords``), K (per class at the intermediate level)."""
    from kdplug.models.student_modules import student_modules

    from .loss import LetKDLoss
    modules = student_modules(distiller.student)
    classes = distiller.task.num_classes(distiller.student)
    specs = []
    for name, loss in distiller.losses.items():
        if not isinstance(loss, LetKDLoss):
            continue
        layer = modules[loss.student_module]
        path = out or loss.codewords_path
        if not path:
            raise CodewordsFitError(f'loss {name!r} names no codewords file: set its codewords= or pass --out')
        spec = dict(name=name, module=loss.student_module, stage=loss.teacher_stage, level=loss.level, path=path,
                    layer=layer, k=layer.num_codewords)
        if loss.level == 'intermediate':
            if not classes or layer.num_codewords % classes:
                raise CodewordsFitError(
                    f'loss {name!r}: the intermediate layer at {loss.student_module!r} predicts '
                    f'{layer.num_codewords} sub-classes, not a multiple of the {classes} classes: set its '
                    'num_codewords to num_classes * K_inter (e.g. 100 * 8)')
            spec.update(k=layer.num_codewords // classes, num_classes=classes)
        specs.append(spec)
    if not specs:
        raise CodewordsFitError('the config has no letKD loss (LetKDPenultimateLoss, LetKDIntermediateLoss): '
                                'fit_codewords is for letKD configs (configs/letkd/)')
    return specs


def build_loader(cfg: 'Config', batch_size: Optional[int], workers: Optional[int], seed: int,
                 augment: bool) -> 'DataLoader':
    """The config's training dataloader, shuffled with ``seed``, with the test pipeline unless ``augment``."""
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
def student_sizes(distiller: nn.Module, inputs: torch.Tensor, specs: List[dict]) -> Dict[str, Tuple[int, int]]:
    """The spatial size of the feature each student layer sees on ``inputs`` (the teacher's is pooled to it), from
    one forward of the student's backbone through the task, in eval mode."""
    sizes: Dict[str, Tuple[int, int]] = {}
    handles = [spec['layer'].register_forward_pre_hook(
        lambda _m, args, module=spec['module']: sizes.__setitem__(module, tuple(args[0].shape[-2:])))
        for spec in specs]
    student = distiller.student
    was_training = student.training
    student.eval()
    try:
        distiller.task.features(student, inputs, ())
    finally:
        student.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [spec['module'] for spec in specs if spec['module'] not in sizes]
    if missing:
        raise CodewordsFitError(f'the student modules at {missing} did not run in the student\'s feature forward '
                                f'({type(distiller.task).__name__}.features): insert them into its backbone')
    return sizes


def _labels(distiller, data_samples: list, take: int) -> torch.Tensor:
    """Each image's hard label (the argmax of a soft one), from the task."""
    target = distiller.task.image_targets(data_samples)
    if target is None:
        raise CodewordsFitError(
            f'the intermediate letKD level needs the class of each image, and {type(distiller.task).__name__} gives '
            'none (a detection image has many): use the penultimate level only (letKD-1)')
    return (target.argmax(1) if target.dim() == 2 else target).long().cpu()[:take]


@torch.no_grad()
def collect(distiller: nn.Module, loader: Iterable, specs: List[dict], device: torch.device,
            max_images: Optional[int], max_vectors: int, seed: int, log: Log = None) -> None:
    """Teacher features (subsampled positions) into ``spec['x']``, and for the intermediate level their image labels
    into ``spec['y']`` (None at the penultimate level); ``log`` hears of every tenth of the images."""
    say = log or _silent
    total = len(loader.dataset) if max_images is None else min(max_images, len(loader.dataset))
    generator = torch.Generator().manual_seed(seed)
    stages = sorted({spec['stage'] for spec in specs})
    needs_labels = any(spec['level'] == 'intermediate' for spec in specs)
    sizes: Dict[tuple, Dict[str, Tuple[int, int]]] = {}  # by input size: the student layers' feature sizes
    chunks: Dict[int, list] = {i: [] for i in range(len(specs))}
    seen, start, next_report = 0, time.time(), 0.0
    for batch in loader:
        if seen >= total:
            break
        data = distiller.data_preprocessor(batch, False)
        take = min(len(data['inputs']), total - seen)
        inputs = data['inputs'].to(device)[:take]
        labels = _labels(distiller, data['data_samples'], take) if needs_labels else None
        shape = tuple(inputs.shape[-2:])  # fixed for classifiers; a detection batch's padded size varies
        if shape not in sizes:
            sizes[shape] = student_sizes(distiller, inputs, specs)
        feats = distiller.task.features(distiller.teacher_model, inputs, stages)
        for i, spec in enumerate(specs):
            feature = align_teacher_feature(feats[spec['stage']].float(), sizes[shape][spec['module']])
            positions = feature.shape[2] * feature.shape[3]
            keep_fraction = min(1.0, max_vectors / (total * positions))
            x = rows(feature).cpu()
            y = labels.repeat_interleave(positions) if spec['level'] == 'intermediate' else None
            if keep_fraction < 1.0:
                keep = torch.rand(len(x), generator=generator) < keep_fraction
                x, y = x[keep], (None if y is None else y[keep])
            chunks[i].append((x, y))
        seen += take
        if seen / total >= next_report or seen >= total:
            elapsed = time.time() - start
            left = f', about {elapsed * (total - seen) / seen:.0f} s left' if seen < total else ''
            say(f'teacher features: {seen}/{total} images ({elapsed:.0f} s{left})')
            next_report = math.floor(seen / total * 10 + 1) / 10
    if seen == 0:
        raise CodewordsFitError('the training dataloader yielded no images: check train_dataloader.dataset '
                                '(data_root)')
    for i, spec in enumerate(specs):
        spec['x'] = torch.cat([x for x, _ in chunks[i]])
        spec['y'] = torch.cat([y for _, y in chunks[i]]) if spec['level'] == 'intermediate' else None
        spec['num_images'] = seen


def fit_section(spec: dict, device: torch.device, iters: int, seed: int, log: Log = None) -> dict:
    """The section of the codewords file for one letKD loss, from the features :func:`collect` kept."""
    say = log or _silent
    x = spec['x'].to(device)
    section = {'level': spec['level'], 'teacher_stage': spec['stage'], 'num_vectors': int(len(x)),
               'num_images': int(spec['num_images'])}
    say(f'{spec["name"]} ({spec["level"]}, student module {spec["module"]!r}, teacher stage {spec["stage"]!r}): '
        f'{len(x)} feature vectors of dimension {x.shape[1]}')
    if spec['level'] == 'penultimate':
        centers, _ = codewords.kmeans(x, spec['k'], iters=iters, seed=seed, log=log)
        section['codewords'] = centers.cpu()
        return section
    y = spec['y'].to(device)
    weight, bias = codewords.fit_lda(x, y, spec['num_classes'])
    say(f'LDA: {weight.shape[1]} -> {weight.shape[0]} dimensions')
    z = x @ weight.t() + bias
    prototypes, valid = codewords.fit_subclasses(z, y, spec['num_classes'], spec['k'], iters=iters, seed=seed, log=log)
    scores = codewords.subclass_scores(z, y, prototypes, valid, spec['k'])
    section.update(lda_weight=weight.cpu(), lda_bias=bias.cpu(), prototypes=prototypes.cpu(), valid=valid.cpu(),
                   scores=scores.cpu(), subclasses=int(spec['k']))
    return section


def fit_codewords(cfg: 'Config', out: Optional[str] = None, device: Optional[str] = None,
                  max_images: Optional[int] = None, max_vectors: int = 1_000_000, batch_size: Optional[int] = None,
                  workers: Optional[int] = None, iters: int = 30, seed: int = 0, augment: bool = False,
                  log: Log = None) -> Dict[str, dict]:
    """Fit the codewords of every LetKDLoss of ``cfg`` (an mmengine Config); returns file path -> contents (the
    format of :mod:`kdplug.letkd.io`, not written: :func:`kdplug.letkd.io.save_codewords_file` writes one).
    ``out``: one file for every loss instead of the paths the config names; ``log`` hears of the progress."""
    from mmengine.registry import DefaultScope
    say = log or _silent
    torch.manual_seed(seed)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        distiller = build_distiller(cfg, device)
        specs = letkd_specs(distiller, out)
        loader = build_loader(cfg, batch_size, workers, seed, augment)
        say(f'teacher {type(distiller.task.backbone(distiller.teacher_model)).__name__} from '
            f'{teacher_checkpoint(cfg)!r} on {device}; {len(loader.dataset)} training images, '
            f'{"training" if augment else "test"} pipeline')
        collect(distiller, loader, specs, device, max_images, max_vectors, seed, log=log)
    files: Dict[str, dict] = {}
    for spec in specs:
        start = time.time()
        section = fit_section(spec, device, iters, seed, log=log)
        say(f'{spec["name"]}: fitted in {time.time() - start:.1f} s')
        files.setdefault(spec['path'], new_codewords_file(meta={
            'config': str(cfg.filename) if cfg.filename else '', 'teacher_checkpoint': str(teacher_checkpoint(cfg)),
            'teacher_identity': checkpoint_identity(str(teacher_checkpoint(cfg))),  # its sha256: a run compares it
            'seed': seed, 'augment': augment, 'created': time.strftime('%Y-%m-%d %H:%M:%S')}))
        files[spec['path']]['sections'][spec['module']] = section
    if out:
        differing = [spec['name'] for spec in specs if distiller.losses[spec['name']].codewords_path != out]
        if differing:
            say('the config names another file; train with --cfg-options ' +
                ' '.join(f'model.losses.{name}.codewords={out}' for name in differing))
    return files
