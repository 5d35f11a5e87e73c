"""CheckpointTeacher: a frozen teacher network loaded from a checkpoint (local path or URL, ``weights_only``)::

    teacher=dict(type='CheckpointTeacher',
                 model=dict(type='ImageClassifier', ...),        # or dict(cfg_path='mmdet::...')
                 checkpoint='work_dirs/teacher/epoch_240.pth')

The network is held outside the module tree (not a registered submodule): it is not in ``parameters()`` (so not in
the optimizer, not in DDP's gradient sync), not in ``state_dict()`` (checkpoints hold the student only), and
``train()`` never reaches it; ``_apply`` moves it with the distiller (``.to()``, ``.cuda()``, ``.half()``). Before
loading, its config is checked against the student (same classes, same input normalisation: the task's
``check_pair``); the checkpoint is loaded strictly, refused when it holds NaN / inf, then frozen in eval mode.
"""
import logging
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from kdplug.engine.checkpoint import checkpoint_identity, load_weights_and_classes
from kdplug.tasks.base import Task, check_model_config

from .base import ModelTeacher


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm statistics never move, dropout off)."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def load_teacher_weights(teacher: nn.Module, path: str) -> Optional[Tuple[str, ...]]:
    """Load ``path`` into ``teacher`` strictly; a clear error when the checkpoint does not fit the config. Returns
    the class names the checkpoint records (None where its meta has none)."""
    state_dict: Dict[str, torch.Tensor]
    state_dict, classes = load_weights_and_classes(path, role='teacher')
    if state_dict and all(key.startswith('student.') for key in state_dict):
        raise RuntimeError(f'teacher checkpoint {path!r} is a distillation run\'s checkpoint (keys "student.*"): '
                           'export the student first with tools/export_student.py, then use that file')
    own = teacher.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs config {tuple(own[k].shape)}'
                   for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        def show(items):
            return ', '.join(items[:5]) + (f' (+{len(items) - 5} more)' if len(items) > 5 else '') or 'none'
        raise RuntimeError(
            f'teacher checkpoint {path!r} does not fit the teacher config: missing keys: {show(missing)}; '
            f'unexpected keys: {show(unexpected)}; shape mismatches: {show(wrong_shape)}. Check that the teacher '
            'config (backbone depth/width, num_classes) is the one the checkpoint was trained with')
    not_finite = [key for key, value in state_dict.items()
                  if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
    if not_finite:
        raise RuntimeError(
            f'teacher checkpoint {path!r} holds NaN or inf values in {len(not_finite)} of its {len(state_dict)} '
            f'tensors ({", ".join(not_finite[:5])}{", ..." if len(not_finite) > 5 else ""}): the teacher run '
            'diverged or the file is damaged, and such a teacher would teach NaN. Use an earlier checkpoint of the '
            'teacher run, or retrain it with a lower learning rate')
    teacher.load_state_dict(state_dict, strict=True)
    return classes


def compare_classes(teacher_classes: Sequence[str], run_classes: Sequence[str], checkpoint: str) -> Optional[str]:
    """A ValueError when the teacher was trained on other classes than the run's, or on the same ones in another
    order (column k of both heads must be the same class); a warning (returned) when only some names differ, which
    may be the same classes spelled otherwise; None when they agree. Another number of classes is refused unless the
    run's are the teacher's first ones in the same order (a dataset of 3 of COCO's classes with an 80-class teacher
    paired broccoli with the teacher's 'person' column)."""
    teacher_classes, run_classes = tuple(teacher_classes), tuple(run_classes)
    if teacher_classes == run_classes or teacher_classes[:len(run_classes)] == run_classes:
        return None
    if len(teacher_classes) != len(run_classes):
        def named(classes: tuple) -> str:
            return ', '.join(map(repr, classes[:3])) + (', ...' if len(classes) > 3 else '')
        raise ValueError(f'the teacher checkpoint {checkpoint!r} was trained on {len(teacher_classes)} classes '
                         f'({named(teacher_classes)}), the run\'s dataset has {len(run_classes)} '
                         f'({named(run_classes)}): logit distillation pairs column k of the teacher with column k of '
                         'the student, so it would teach wrong classes. Use a teacher trained on this dataset\'s '
                         'classes (metainfo.classes) in this order')
    differ = [(k, t, r) for k, (t, r) in enumerate(zip(teacher_classes, run_classes)) if t != r]
    shown = '; '.join(f'class {k}: {t!r} in the teacher, {r!r} here' for k, t, r in differ[:3]) + \
        (f' (+{len(differ) - 3} more)' if len(differ) > 3 else '')
    if sorted(teacher_classes) == sorted(run_classes) or \
            len(set(teacher_classes) & set(run_classes)) < len(run_classes) / 2:
        why = 'the same classes in another order' if sorted(teacher_classes) == sorted(run_classes) else \
            'the classes of another dataset'
        raise ValueError(f'the teacher checkpoint {checkpoint!r} was trained on {why} ({shown}): logit '
                         'distillation pairs column k of the teacher with column k of the student, so it would teach '
                         'wrong classes. Use a teacher trained on this dataset; if these are the same classes under '
                         'other names, set the checkpoint\'s meta.dataset_meta.classes to this run\'s')
    return (f'the teacher checkpoint {checkpoint!r} names {len(differ)} of its classes otherwise than the run\'s '
            f'dataset ({shown}): if they are other classes, the teacher teaches wrong ones')


class CheckpointTeacher(ModelTeacher):

    def __init__(self, model: dict, checkpoint: Optional[str]) -> None:
        super().__init__()
        if not checkpoint:
            raise ValueError('the teacher\'s checkpoint is missing: a teacher with random weights teaches nothing. '
                             'Train the teacher first (configs/teachers/, configs/detection/teachers/) or use a '
                             'released checkpoint, and set teacher=dict(type="CheckpointTeacher", model=..., '
                             'checkpoint=PATH_OR_URL)')
        check_model_config(model, 'model.teacher.model: the teacher\'s')
        self.model_cfg, self.checkpoint = dict(model), str(checkpoint)
        self.description = f'the teacher ({self.checkpoint})'
        self.classes: Optional[Tuple[str, ...]] = None  # as its checkpoint records them
        self._identity: Optional[str] = None  # identity(): read when a checkpoint first records it
        object.__setattr__(self, '_model', None)

    def setup(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        # built under a forked generator: the teacher's random initial weights are overwritten by the checkpoint,
        # and drawing them must not move the generator the student's init_weights draws from next (else a run's
        # student depends on where its teacher's logits come from: online, cached)
        with torch.random.fork_rng(devices=[]):
            model = task.build_model(task.model_config(self.model_cfg), 'teacher')
        task.check_pair(student, model, data_preprocessor)
        self.classes = load_teacher_weights(model, self.checkpoint)
        object.__setattr__(self, '_model', freeze(model))  # outside the module tree (see the module docstring)

    def setup_to_evaluate(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        """Nothing: the network is outside the run's checkpoints and the student's predictions do not use it."""

    def identity(self) -> Optional[str]:
        """The sha256 of the checkpoint file (a URL stands for itself), read once."""
        if self._identity is None:
            self._identity = checkpoint_identity(self.checkpoint)
        return self._identity

    def check_classes(self, classes: Sequence[str]) -> None:
        from mmengine.logging import print_log
        if self.classes is None:  # a converted or hand-saved checkpoint: its head's size was checked, nothing more
            print_log(f'the teacher checkpoint {self.checkpoint!r} records no class names: only its number of classes '
                      'was compared with the student\'s', logger='current')
            return
        warning = compare_classes(self.classes, classes, self.checkpoint)
        if warning:
            print_log(warning, logger='current', level=logging.WARNING)

    @property
    def model(self) -> Optional[nn.Module]:
        return self._model

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._model is not None:
            self._model._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'CheckpointTeacher':
        super().train(mode)
        if self._model is not None:
            self._model.eval()  # the Runner calls train() every epoch: the teacher stays in eval mode
        return self

    def extra_repr(self) -> str:
        return f'checkpoint={self.checkpoint!r}'
