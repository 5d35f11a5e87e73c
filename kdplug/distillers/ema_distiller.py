"""Self-distillation from an EMA teacher, after the appendix of Kong et al., "En-Compactness: Self-Distillation
Embedding & Contrastive Generation for Generalized Zero-Shot Learning" (ICCE), CVPR 2022: the teacher is an
exponential moving average of the student, theta_T <- xi * theta_T + (1 - xi) * theta_S after every optimizer
step, used with L2-normalised logits at tau = 1 (``KDLoss(temperature=1.0, logit_norm='l2')``) or any loss of the
library::

    model = dict(type='kdplug.EMADistiller', student=dict(...), xi=0.99,
                 losses=dict(kd=dict(type='KDLoss', temperature=1.0, logit_norm='l2', loss_weight=10.0)))
    custom_hooks = [dict(type='kdplug.EMATeacherHook')]       # does the update after each optimizer step

The EMA copy starts as the student's (initialised) weights at the first training step, averages parameters and
copies buffers (BatchNorm statistics), never takes gradients and stays in eval mode. Unlike a loaded teacher it is
part of the checkpoint (``teacher.*``), so a resumed run continues with the same EMA; the export drops it.
"""
import copy
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from .logit_distiller import ClassifierDistiller


class EMADistiller(ClassifierDistiller):

    def __init__(self, student: dict, losses: Mapping[str, dict], xi: float = 0.99,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        from kdplug.adapters import mmpretrain as adapter
        super().__init__(losses=losses, data_preprocessor=adapter.data_preprocessor_config(data_preprocessor, student),
                         init_cfg=init_cfg)
        if not 0.0 <= xi < 1.0:
            raise ValueError(f'xi is the EMA decay and must lie in [0, 1), got {xi} '
                             '(Kong et al., CVPR 2022, use 0.9 to 0.99)')
        self.xi = float(xi)
        self.student = adapter.build_classifier(student)
        teacher = copy.deepcopy(self.student)
        for param in teacher.parameters():
            param.requires_grad_(False)
        self.teacher = teacher.eval()  # a registered submodule: saved and resumed with the run
        self.teacher_name = 'the EMA self-teacher'
        self.register_buffer('ema_started', torch.tensor(False))
        self.hook_attached = False

    @torch.no_grad()
    def update_teacher(self) -> None:
        """theta_T <- xi theta_T + (1 - xi) theta_S; the first call copies the student."""
        xi = self.xi if bool(self.ema_started) else 0.0
        for ema, current in zip(self.teacher.parameters(), self.student.parameters()):
            ema.mul_(xi).add_(current.detach(), alpha=1.0 - xi)
        for ema, current in zip(self.teacher.buffers(), self.student.buffers()):
            ema.copy_(current)
        self.ema_started.fill_(True)

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        if not self.hook_attached:
            raise RuntimeError("EMADistiller needs its update hook: add custom_hooks = [dict(type='kdplug."
                               "EMATeacherHook')] to the config (without it the teacher would never move)")
        if not bool(self.ema_started):
            self.update_teacher()
        return super().loss(inputs, data_samples)
