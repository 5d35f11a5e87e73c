"""Reverse KD: T^2 * KL(softmax(s / T) || softmax(t / T)), mode-seeking where KD is mean-seeking.

kdplug's helpers give it the loss contract that every registered loss passes (tests/test_loss_conformance.py):
``check_logits`` (float32, the teacher detached, same shapes, at least 2 classes) and ``reduce_per_sample`` (the
mean over samples, or sum(w * l) / sum(w) with row weights; 0 in the graph for an empty batch).
"""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from kdplug.losses.functional import check_logits, reduce_per_sample


class ReverseKDLoss(nn.Module):

    def __init__(self, temperature: float = 4.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None) -> Tensor:
        student_logits, teacher_logits = check_logits(student_logits, teacher_logits)
        log_p_s = F.log_softmax(student_logits / self.temperature, dim=-1)
        log_p_t = F.log_softmax(teacher_logits / self.temperature, dim=-1)
        per_sample = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=-1)
        return self.loss_weight * self.temperature ** 2 * reduce_per_sample(per_sample, weight)
