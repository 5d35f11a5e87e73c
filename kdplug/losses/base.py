"""The thin module every teacher-based logit loss of kdplug shares.

A subclass implements :meth:`LogitLoss.per_sample` on float32 logits that already went through ``logit_norm``; the
base class checks the inputs, applies the pre-transform, reduces with the one helper and multiplies by
``loss_weight``. The call is always ``loss(student_logits, teacher_logits, target)``; ``weight`` (N,) optionally
weighs samples (e.g. background RoIs in detection).
"""
from typing import Optional

from torch import Tensor, nn

from .functional import LOGIT_NORMS, apply_logit_norm, check_hyperparameter, check_logits, reduce_per_sample


class LogitLoss(nn.Module):
    """Base of the logit losses: ``forward(student_logits, teacher_logits, target=None, weight=None)`` -> scalar."""

    def __init__(self, loss_weight: float = 1.0, logit_norm: Optional[str] = None) -> None:
        super().__init__()
        if logit_norm not in LOGIT_NORMS:
            raise ValueError(f'logit_norm={logit_norm!r} is not one of {LOGIT_NORMS}: None (raw logits), '
                             "'zscore' (logit standardization, CVPR 2024) or 'l2' (L2-normalised logits)")
        self.loss_weight = check_hyperparameter('loss_weight', loss_weight)
        self.logit_norm = logit_norm

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        """The loss of each sample, (N,), before ``loss_weight``."""
        raise NotImplementedError

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None) -> Tensor:
        student_logits, teacher_logits = check_logits(student_logits, teacher_logits)
        student_logits = apply_logit_norm(student_logits, self.logit_norm)
        teacher_logits = apply_logit_norm(teacher_logits, self.logit_norm)
        per_sample = self.per_sample(student_logits, teacher_logits, target)
        return self.loss_weight * reduce_per_sample(per_sample, weight)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, logit_norm={self.logit_norm!r}'
