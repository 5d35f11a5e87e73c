"""What every kdplug distiller shares: named losses with warm-up scales, the teacher held outside the module tree,
and the ``student.*`` / ``distill.*`` loss keys."""
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping, Optional

import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from .teacher import freeze


class DistillerBase(BaseModel):
    """Base of the distillers. Subclasses set ``self.student`` and, for teacher-based distillation, call
    :meth:`set_teacher`; they compute the logits and call :meth:`distill_losses`.

    ``loss_scales[name]`` multiplies loss ``name`` (1.0 unless a hook such as ``LossWarmupHook`` changes it).
    """

    def __init__(self, losses: Optional[Mapping[str, dict]] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from kdplug.registry import MODELS
        if not losses:
            raise ValueError('a distiller needs at least one loss, e.g. losses=dict(kd=dict(type="KDLoss", '
                             'temperature=4.0, loss_weight=0.9))')
        self.losses = nn.ModuleDict({name: MODELS.build(cfg) for name, cfg in losses.items()})
        self.loss_scales: Dict[str, float] = {name: 1.0 for name in self.losses}
        object.__setattr__(self, 'teacher', None)
        self._predict_with_teacher = False

    # -- the teacher, outside the module tree -------------------------------------------------------------------
    def set_teacher(self, teacher: nn.Module) -> None:
        object.__setattr__(self, 'teacher', freeze(teacher))

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None and 'teacher' not in self._modules:  # a registered teacher moved already
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'DistillerBase':
        """The Runner calls train() every epoch: the student follows, the teacher stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @contextmanager
    def predicting_with_teacher(self) -> Iterator[None]:
        """Within this context ``predict`` runs the teacher (used to evaluate it at the start of training)."""
        if self.teacher is None:
            raise RuntimeError('this distiller has no teacher to evaluate')
        self._predict_with_teacher = True
        try:
            yield
        finally:
            self._predict_with_teacher = False

    # -- losses ---------------------------------------------------------------------------------------------------
    def distill_losses(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor],
                       weight: Optional[Tensor] = None) -> Dict[str, Tensor]:
        out = {}
        for name, loss in self.losses.items():
            kwargs = {} if weight is None else {'weight': weight}
            out[f'distill.loss_{name}'] = self.loss_scales[name] * loss(student_logits, teacher_logits, target,
                                                                          **kwargs)
        return out

    @staticmethod
    def prefixed(losses: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
        return {f'{prefix}.{key}': value for key, value in losses.items()}

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f'invalid mode {mode!r}: use "loss", "predict" or "tensor"')
