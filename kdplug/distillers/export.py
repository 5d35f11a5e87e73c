"""Student-only export: a distillation run's checkpoint -> a checkpoint that plain mmpretrain / mmdet loads.

The distiller's state dict holds ``student.*`` and, for some teacher sources, training-only state (an EMA teacher's
``teacher.ema.*``, USKD's weak head ``teacher.head.*``; a checkpoint teacher is never saved), which is dropped: the
export is exactly the student model.
"""
import os
from typing import Any, Dict

import torch

import kdplug
from kdplug.engine.checkpoint import load_checkpoint_file, replaced_whole

PREFIX = 'student.'


def export_student(checkpoint: str, out: str) -> Dict[str, Any]:
    """Write the student of ``checkpoint`` to ``out`` as ``{'state_dict', 'meta'}``; returns what was written."""
    if os.path.exists(out) and os.path.exists(checkpoint) and os.path.samefile(out, checkpoint):
        raise ValueError(f'{out!r} is the checkpoint to export: writing the student there would replace the run\'s '
                         'checkpoint (its optimizer, teacher and training state). Give another output path')
    loaded = load_checkpoint_file(checkpoint, role='distillation run')
    state_dict = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict) or not any(k.startswith(PREFIX) for k in state_dict):
        raise ValueError(f'{checkpoint!r} holds no "student.*" weights: it is not the checkpoint of a kdplug '
                         'distillation run. Give an epoch_<n>.pth / iter_<n>.pth that a kdplug distiller wrote; a '
                         'plain mmpretrain / mmdet checkpoint is already a student and needs no export')
    student = {key[len(PREFIX):]: value for key, value in state_dict.items() if key.startswith(PREFIX)}
    meta = dict(loaded.get('meta') or {})
    exported = {
        'state_dict': student,
        'meta': {
            'dataset_meta': meta.get('dataset_meta'),
            'epoch': meta.get('epoch'),
            'iter': meta.get('iter'),
            'exported_from': checkpoint,
            'kdplug_version': kdplug.__version__,
        },
    }
    with replaced_whole(out) as partial:  # whole or not at all: an interrupted export leaves no truncated file
        torch.save(exported, partial)
    return exported
