"""Reverse KD: T^2 * KL(softmax(s / T) || softmax(t / T)), mode-seeking where KD is mean-seeking."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


class ReverseKDLoss(nn.Module):

    def __init__(self, temperature: float = 4.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None) -> Tensor:
        log_p_s = F.log_softmax(student_logits.float() / self.temperature, dim=-1)
        log_p_t = F.log_softmax(teacher_logits.detach().float() / self.temperature, dim=-1)
        per_sample = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=-1)
        scale = self.loss_weight * self.temperature ** 2
        if weight is not None:  # row weights (N,): e.g. 0 for rows the distiller leaves out
            return scale * (weight * per_sample).sum() / weight.sum().clamp_min(1e-12)
        return scale * per_sample.sum() / max(len(per_sample), 1)
