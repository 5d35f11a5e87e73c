"""NKD: Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
Normalized Loss and Customized Soft Labels", ICCV 2023, arXiv:2303.13005 (and its supplementary material).

With p = softmax at T = 1 and, for the non-target part, the target column dropped and the C - 1 remaining logits
softened at temperature T (Tn = softmax(t_nt / T), Sn = log_softmax(s_nt / T)):

    L_target_i = - p^t_y * log p^s_y
    L_non_i    = - gamma * T^2 * sum_k Tn_k * log Sn_k
    L_NKD = 1/N sum_i (L_target_i + L_non_i)          (added to the student's own cross-entropy)

Soft labels (mixup / cutmix) are reduced to their argmax, as the authors do. With ``t_norm`` the non-target
temperature is NormKD's per-sample t_norm * std (from the full logits), weighted by the teacher's T_i^2.
Defaults: T = 1, gamma = 1.5 (ImageNet CNNs); DeiT gamma = 1; CIFAR-100 T = 3, gamma = 3.5.
"""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from .base import LogitLoss
from .functional import Temperature, check_hyperparameter, hard_labels, non_target_log_softmax


def nkd_per_sample(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: Temperature,
                   gamma: float) -> Tensor:
    """L_target + L_non per sample, (N,)."""
    index = target.unsqueeze(1)
    log_p_student_y = F.log_softmax(student_logits, dim=-1).gather(1, index).squeeze(1)
    p_teacher_y = F.softmax(teacher_logits, dim=-1).gather(1, index).squeeze(1)
    target_term = -p_teacher_y * log_p_student_y
    t_student, t_teacher = temperature(student_logits), temperature(teacher_logits)
    soft_teacher = non_target_log_softmax(teacher_logits / t_teacher, index).exp_()  # 0 at the target
    log_student = non_target_log_softmax(student_logits / t_student, index, fill=0.0)
    non_target = -(soft_teacher * log_student).sum(dim=-1)
    return target_term + gamma * temperature.compensation(t_teacher) * non_target


class NKDLoss(LogitLoss):
    """Normalized KD: target term + gamma * T^2 * non-target cross-entropy."""

    def __init__(self, temperature: Optional[float] = None, gamma: float = 1.5, t_norm: Optional[float] = None,
                 logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        self.gamma = check_hyperparameter('gamma', gamma)
        self.temperature = Temperature(temperature, t_norm, default=1.0)

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        target = hard_labels(target, *student_logits.shape, method='NKDLoss', soft_ok=True)
        return nkd_per_sample(student_logits, teacher_logits, target, self.temperature, self.gamma)

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, {self.temperature}, {super().extra_repr()}'
