"""Reverse KD: T^2 * KL(softmax(s / T) || softmax(t / T)), mode-seeking where KD is mean-seeking.

Subclassing kdplug's ``LogitLoss`` gives it the loss contract that every registered loss passes
(tests/test_loss_conformance.py): ``forward(student_logits, teacher_logits, target=None, weight=None)`` checks the
logits (float32, the teacher detached, same shapes, at least 2 classes), applies ``logit_norm`` ('zscore', 'l2'),
reduces the per-sample values (the mean, or sum(w * l) / sum(w) with row weights; 0 in the graph for an empty
batch) and multiplies by ``loss_weight``; a loss only writes ``per_sample``.
"""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from kdplug.losses.base import LogitLoss
from kdplug.losses.functional import check_hyperparameter


class ReverseKDLoss(LogitLoss):

    def __init__(self, temperature: float = 4.0, loss_weight: float = 1.0, logit_norm: Optional[str] = None) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        self.temperature = check_hyperparameter('temperature', temperature, strict=True)

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        log_p_s = F.log_softmax(student_logits / self.temperature, dim=-1)
        log_p_t = F.log_softmax(teacher_logits / self.temperature, dim=-1)
        return self.temperature ** 2 * (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=-1)
