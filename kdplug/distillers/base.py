"""What every kdplug distiller shares: named losses with warm-up scales, the teacher held outside the module tree,
its non-finite logits kept out of the student, and the ``student.*`` / ``distill.*`` loss keys."""
import inspect
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple

import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from .teacher import freeze


class DistillerBase(BaseModel):
    """Base of the distillers. Subclasses set ``self.student`` and, for teacher-based distillation, call
    :meth:`set_teacher`; they compute the logits and call :meth:`distill_losses`.

    ``loss_scales[name]`` multiplies loss ``name`` (1.0 unless a hook such as ``LossWarmupHook`` changes it).

    Views: a loss with ``views = 2`` (MLKD) takes two views of every image, their logits stacked along the batch
    (weak rows, then strong rows). All the losses of a distiller take the same number (``num_views``, checked at
    build, as is ``max_views``, the most the distiller can feed), and every batch must bring it (checked in
    :meth:`distill_losses`, with an error that names the transform to add or remove).
    """

    #: The most views of each image this distiller gives its losses (ClassifierDistiller: 2).
    max_views = 1

    def __init__(self, losses: Optional[Mapping[str, dict]] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from kdplug.registry import MODELS
        if not losses:
            raise ValueError('a distiller needs at least one loss, e.g. losses=dict(kd=dict(type="KDLoss", '
                             'temperature=4.0, loss_weight=0.9))')
        self.losses = nn.ModuleDict({name: MODELS.build(cfg) for name, cfg in losses.items()})
        self.loss_scales: Dict[str, float] = {name: 1.0 for name in self.losses}
        # the loss contract's row weights (forward(..., weight=None)); a loss without them still works, but then
        # rows left out (background RoIs, non-finite teacher rows) reach it as ordinary rows
        self._takes_weight = {name: 'weight' in inspect.signature(loss.forward).parameters
                              for name, loss in self.losses.items()}
        views = {name: getattr(loss, 'views', 1) for name, loss in self.losses.items()}
        if len(set(views.values())) > 1:
            raise ValueError(f'the losses take different numbers of views of each image ({views}): a batch brings '
                             'one number of views, so give them all the same (e.g. MLKDLoss(views=2) alone)')
        self.num_views = next(iter(views.values()))
        if self.num_views > self.max_views:
            raise ValueError(f'{type(self).__name__} gives its losses one view of each image, but {sorted(views)} '
                             f'take {self.num_views} (e.g. MLKDLoss(views=2)): use kdplug.LogitDistiller with a '
                             'MultiView pipeline, or views=1')
        object.__setattr__(self, 'teacher', None)
        self.teacher_name = 'the teacher'
        self._predict_with_teacher = False
        self._nonfinite_teacher_rows: Optional[Tensor] = None  # a device-side count: no host sync per step
        self._teacher_checks = 0

    # -- the teacher, outside the module tree -------------------------------------------------------------------
    def set_teacher(self, teacher: nn.Module, name: str = 'the teacher') -> None:
        object.__setattr__(self, 'teacher', freeze(teacher))
        self.teacher_name = name

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

    # -- non-finite teacher logits -------------------------------------------------------------------------------
    #: How often (in calls) the count of non-finite teacher rows is read on an accelerator; on the CPU, every call.
    TEACHER_CHECK_INTERVAL = 50

    def finite_teacher_rows(self, teacher_logits: Tensor,
                            weight: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """Teacher rows with a NaN or inf are left out of every loss (logits zeroed, row weight 0), so no NaN
        reaches the student's gradient, and counted on the device. Reading the count synchronises with the device,
        so it is read every call on the CPU and every :attr:`TEACHER_CHECK_INTERVAL` calls (and before every
        prediction) on an accelerator: a broken teacher stops the run within that many steps, with the student's
        weights intact."""
        finite = torch.isfinite(teacher_logits).all(dim=-1)
        bad = (~finite).sum()
        self._nonfinite_teacher_rows = bad if self._nonfinite_teacher_rows is None else \
            self._nonfinite_teacher_rows + bad
        self._teacher_checks += 1
        if teacher_logits.device.type == 'cpu' or self._teacher_checks % self.TEACHER_CHECK_INTERVAL == 0:
            self.check_teacher_rows()
        teacher_logits = torch.where(finite.unsqueeze(-1), teacher_logits, torch.zeros_like(teacher_logits))
        keep = finite.to(teacher_logits.dtype if teacher_logits.is_floating_point() else torch.float32)
        return teacher_logits, keep if weight is None else weight * keep

    def check_teacher_rows(self) -> None:
        """Raise if any teacher row seen so far was not finite."""
        count = 0 if self._nonfinite_teacher_rows is None else int(self._nonfinite_teacher_rows)
        if count:
            raise FloatingPointError(
                f'{self.teacher_name} produced non-finite logits (NaN or inf) for {count} rows in the '
                f'{self._teacher_checks} distillation steps so far. Those rows were left out of the distillation '
                'losses, so the student\'s weights are finite, and the run stops here. Check the teacher: evaluate '
                'it alone (tools/test.py with its config and checkpoint), check its input normalisation against the '
                'student\'s data_preprocessor, and under --amp try float32 for the teacher (float16 overflows past '
                '65504)' + ('; an EMA self-teacher is an average of the student, so the student itself diverged: '
                            'lower the learning rate' if 'EMA' in self.teacher_name else ''))

    # -- losses ---------------------------------------------------------------------------------------------------
    def check_views(self, views: int) -> None:
        """Raise unless the batch brings as many views of each image as the losses take."""
        if views == self.num_views:
            return
        names = {name: type(loss).__name__ for name, loss in self.losses.items()}
        if views < self.num_views:
            raise ValueError(
                f'the losses {names} take {self.num_views} views of every image (MLKD: a weak and a strong one), '
                f'but the batch brings {views}: put mmpretrain\'s dict(type=\'MultiView\', num_views=[1, 1], '
                'transforms=[weak_pipeline, strong_pipeline]) before PackInputs in the training pipeline, with '
                "data_preprocessor=dict(type='mmpretrain.SelfSupDataPreprocessor', ...), as "
                'configs/_base_/datasets/*_multiview.py do')
        raise ValueError(f'the training pipeline gives {views} views of every image (a MultiView transform), but the '
                         f'losses {names} take {self.num_views}: remove the MultiView transform, or use losses that '
                         'take the views (MLKDLoss(views=2))')

    def distill_losses(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor],
                       weight: Optional[Tensor] = None, names: Optional[Iterable[str]] = None,
                       views: int = 1) -> Dict[str, Tensor]:
        """``distill.loss_<name>`` of each loss (of ``names``, default all), scaled by its warm-up scale. With
        ``views`` > 1 the rows are the views of the batch stacked (view after view), ``target`` repeated alike."""
        self.check_views(views)
        if self.teacher is not None:  # a teacher's logits (USKD's second input is the student's own weak head)
            teacher_logits, weight = self.finite_teacher_rows(teacher_logits, weight)
        out = {}
        for name in self.losses if names is None else names:
            loss = self.losses[name]
            kwargs = {} if weight is None or not self._takes_weight[name] else {'weight': weight}
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
            self.check_teacher_rows()  # validation runs after the last training steps: nothing goes unreported
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f'invalid mode {mode!r}: use "loss", "predict" or "tensor"')
