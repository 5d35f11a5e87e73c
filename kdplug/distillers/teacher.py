"""The teacher's lifecycle, shared by every distiller: load safely, check, freeze, keep in eval mode.

The teacher is held outside the module tree (not a registered submodule): it is not in ``parameters()`` (so not in
the optimizer, not in DDP's gradient sync), not in ``state_dict()`` (checkpoints hold the student only), and
``train()`` never reaches it. ``Distiller._apply`` moves it with the distiller (``.to()``, ``.cuda()``, ``.half()``).
"""
from typing import Dict, Optional

import torch
from torch import nn

from kdplug.engine.checkpoint import load_weights


def load_teacher_weights(teacher: nn.Module, path: str) -> None:
    """Load ``path`` into ``teacher`` strictly; a clear error when the checkpoint does not fit the config."""
    state_dict: Dict[str, torch.Tensor] = load_weights(path, role='teacher')
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


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm statistics never move, dropout off)."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def check_num_classes(student_classes: Optional[int], teacher_classes: Optional[int]) -> None:
    if student_classes is not None and teacher_classes is not None and student_classes != teacher_classes:
        raise ValueError(
            f'the teacher predicts {teacher_classes} classes and the student {student_classes}: logit distillation '
            'needs the same classes in the same order. Set num_classes of both heads to the dataset\'s '
            'and use a teacher trained on that dataset')
