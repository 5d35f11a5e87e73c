"""Multi-temperature KD: section 3.2 of Chi et al., "NormKD: Normalized Logits for Knowledge Distillation",
arXiv:2308.00520.

Soften the logits with each temperature of a set and average the predictions, for student and teacher:

    p_bar(x) = 1/k sum_j softmax(x / t_j)
    L = 1/N sum_i max(t)^2 * KL( p_bar(t_i) || p_bar(s_i) )                 (eq. 3-4, T_mul = max of the set)

Default set: 1..14, the best of its Table 1 (resnet32x4 -> resnet8x4 on CIFAR-100, 76.33). With ``t_norm`` every
temperature of the set is multiplied by the per-sample NormKD temperature t_norm * std(x_i).
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LogitLoss
from .functional import Temperature, kl_rows


def mean_softmax_log(logits: Tensor, temperatures: Tensor) -> Tensor:
    """log of the average over the set of softmax(x / t_j), (N, C); temperatures (N, k)."""
    log_probs = F.log_softmax(logits.unsqueeze(1) / temperatures.unsqueeze(2), dim=-1)  # (N, k, C)
    return torch.logsumexp(log_probs, dim=1) - math.log(temperatures.shape[1])


def multi_temp_kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature) -> Tensor:
    t_student, t_teacher = temperature(student_logits), temperature(teacher_logits)
    kl = kl_rows(mean_softmax_log(teacher_logits, t_teacher), mean_softmax_log(student_logits, t_student))
    return kl * temperature.compensation(t_teacher)


class MultiTempKDLoss(LogitLoss):
    """KD with the predictions averaged over a set of temperatures."""

    def __init__(self, temperatures: Sequence[float] = tuple(range(1, 15)), t_norm: Optional[float] = None,
                 logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence) or not temperatures:
            raise ValueError(f'MultiTempKDLoss: temperatures must be a list of numbers, e.g. [1, 2, 4], got '
                             f'{temperatures!r}')
        self.temperature = Temperature(list(temperatures), t_norm)

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        return multi_temp_kd_per_sample(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f'{self.temperature}, {super().extra_repr()}'
