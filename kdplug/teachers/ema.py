"""EMATeacher: an exponential moving average of the student as its teacher, after the appendix of Kong et al.,
"En-Compactness: Self-Distillation Embedding & Contrastive Generation for Generalized Zero-Shot Learning" (ICCE),
CVPR 2022: theta_T <- xi * theta_T + (1 - xi) * theta_S after every optimizer step::

    teacher=dict(type='EMATeacher', xi=0.99)
    custom_hooks = [dict(type='kdplug.EMATeacherHook')]       # does the update after each optimizer step

Any task: the copy is the student's own architecture. It starts as the student's (initialised) weights at the first
training step, averages parameters and copies buffers (BatchNorm statistics), never takes gradients and stays in
eval mode. Unlike a loaded teacher it is part of the checkpoint (``teacher.ema.*``), so a resumed run continues
with the same average; the export drops it.
"""
import copy
from typing import Optional

import torch
from torch import nn

from kdplug.losses.functional import check_hyperparameter
from kdplug.tasks.base import Task

from .base import ModelTeacher


class EMATeacher(ModelTeacher):

    description = 'the EMA self-teacher'
    trained_before_the_run = False  # the student's running average: before training, the untrained student

    def __init__(self, xi: float = 0.99) -> None:
        super().__init__()
        xi = check_hyperparameter('xi', xi)  # a number, finite and >= 0
        if not xi < 1.0:
            raise ValueError(f'xi is the EMA decay and must lie in [0, 1), got {xi} '
                             '(Kong et al., CVPR 2022, use 0.9 to 0.99)')
        self.xi = xi
        self.ema: Optional[nn.Module] = None
        self.register_buffer('started', torch.tensor(False))
        self.hook_attached = False

    def setup(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        ema = copy.deepcopy(student)
        for param in ema.parameters():
            param.requires_grad_(False)
        self.ema = ema.eval()  # a registered submodule: saved and resumed with the run

    @property
    def model(self) -> Optional[nn.Module]:
        return self.ema

    def train(self, mode: bool = True) -> 'EMATeacher':
        super().train(mode)
        if self.ema is not None:
            self.ema.eval()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """theta_T <- xi theta_T + (1 - xi) theta_S; the first call copies the student."""
        xi = self.xi if bool(self.started) else 0.0
        for ema, current in zip(self.ema.parameters(), student.parameters()):
            ema.mul_(xi).add_(current.detach(), alpha=1.0 - xi)
        for ema, current in zip(self.ema.buffers(), student.buffers()):
            ema.copy_(current)
        self.started.fill_(True)

    def before_step(self, student: nn.Module) -> None:
        if not self.hook_attached:
            raise RuntimeError("the EMA teacher needs its update hook: add custom_hooks = [dict(type='kdplug."
                               "EMATeacherHook')] to the config (without it the teacher would never move)")
        if not bool(self.started):
            self.update(student)

    def extra_repr(self) -> str:
        return f'xi={self.xi}'
