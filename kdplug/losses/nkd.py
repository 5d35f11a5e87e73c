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
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import LogitLoss
from .functional import (EXCLUDED_LOGIT, Temperature, check_hyperparameter, hard_labels, one_temperature,
                         softmax_parts, sum_kl_terms)


class _NKDTerms(torch.autograd.Function):
    """(-p^t_y log p^s_y, -sum_k Tn_k log Sn_k) per row from (student, T_s, teacher, T_t, target index) with the
    gradients written out. With p^s the student's softmax at T = 1, z = s / T_s, q and p the student's and
    teacher's softmax over the non-target classes of z and t / T_t:

        d target / d s_j = p^t_y (p^s_j - [j = y]),   d non-target / d z_j = q_j - p_j  (j != y, 0 at y)
        d / d T_s = -sum_j (d non-target / d z_j) * z_j / T_s           (NKD with NormKD's temperature)

    The target column is set to EXCLUDED_LOGIT after the division: one log-softmax per model is the non-target
    softmax, and no product needs a mask. The teacher's logits and temperature take no gradient."""

    @staticmethod
    def forward(ctx, student: Tensor, t_student: Tensor, teacher: Tensor, t_teacher: Tensor,
                index: Tensor) -> Tuple[Tensor, Tensor]:
        # p^s itself (the backward's), and log p^s_y as its log: one softmax, no exp in the backward
        p_student, _, log_p_student_y, _ = softmax_parts(student, index)
        p_teacher_y = torch.softmax(teacher, dim=-1).gather(1, index)
        z_s = (student / t_student).scatter_(1, index, EXCLUDED_LOGIT)
        log_q = torch.log_softmax(z_s, dim=-1)
        p = torch.log_softmax((teacher / t_teacher).scatter_(1, index, EXCLUDED_LOGIT), dim=-1).exp_()
        non_target = -sum_kl_terms(p * log_q, p)[0]  # sum_kl_terms: 0 where p is 0, even against a -inf
        ctx.save_for_backward(p_student, p_teacher_y, log_q, p, index, t_student,
                              z_s if ctx.needs_input_grad[1] else None)
        return -(p_teacher_y * log_p_student_y).squeeze(1), non_target

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_target: Tensor, grad_non_target: Tensor) -> tuple:
        p_student, p_teacher_y, log_q, p, index, t_student, z_s = ctx.saved_tensors
        weight_target = grad_target.unsqueeze(-1) * p_teacher_y                                   # (N, 1)
        grad_t = None
        if ctx.needs_input_grad[1]:
            grad_z = log_q.exp().sub_(p).mul_(grad_non_target.unsqueeze(-1))                  # 0 at the target
            grad_t = -torch.linalg.vecdot(grad_z, z_s).unsqueeze(-1) / t_student
            grad_z.div_(t_student)
        else:  # d / d s of the non-target term, its 1 / T_s taken with the upstream gradient: one pass fewer
            grad_z = log_q.exp().sub_(p).mul_(grad_non_target.unsqueeze(-1) / t_student)
        if not ctx.needs_input_grad[0]:
            return None, grad_t, None, None, None
        grad_student = grad_z.addcmul_(p_student, weight_target)
        grad_student.scatter_add_(1, index, -weight_target)
        return grad_student, grad_t, None, None, None


def nkd_per_sample(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: Temperature,
                   gamma: float) -> Tensor:
    """L_target + L_non per sample, (N,)."""
    t_teacher = temperature(teacher_logits.detach()).detach()
    target_term, non_target = _NKDTerms.apply(student_logits, temperature(student_logits), teacher_logits.detach(),
                                              t_teacher, target.unsqueeze(1))
    return target_term + gamma * temperature.compensation(t_teacher) * non_target


class NKDLoss(LogitLoss):
    """Normalized KD: target term + gamma * T^2 * non-target cross-entropy."""

    def __init__(self, temperature: Optional[float] = None, gamma: float = 1.5, t_norm: Optional[float] = None,
                 logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        self.gamma = check_hyperparameter('gamma', gamma)
        self.temperature = one_temperature(temperature, t_norm, 1.0, 'NKDLoss')

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        target = hard_labels(target, *student_logits.shape, method='NKDLoss', soft_ok=True)
        return nkd_per_sample(student_logits, teacher_logits, target, self.temperature, self.gamma)

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, {self.temperature}, {super().extra_repr()}'
