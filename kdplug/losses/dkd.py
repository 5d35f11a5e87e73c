"""DKD: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022, arXiv:2203.08679.

With p = softmax(x / T), b = (p_y, 1 - p_y) the binary target/non-target split and p_hat the softmax over the C - 1
non-target logits only:

    TCKD_i = KL(b^t || b^s),  NCKD_i = KL(p_hat^t || p_hat^s)
    L_DKD = 1/N sum_i T_i^2 * (alpha * TCKD_i + beta * NCKD_i)

KD decomposes as KL(p^t || p^s) = TCKD + (1 - p_y^t) * NCKD per sample: DKD frees the two weights. The warm-up
min(epoch / warmup, 1) of the paper is an mmengine hook on the distiller, not part of the loss. With ``t_norm``
this is NormKD+DKD (Chi et al., "NormKD: Normalized Logits for Knowledge Distillation", arXiv:2308.00520,
Tables 2-5): both terms use the per-sample NormKD temperatures. Needs hard labels. Defaults: alpha = 1, beta = 8,
T = 4 (CIFAR-100 resnet32x4 -> resnet8x4).

Computed exactly (the non-target softmax drops the target column; log(1 - p_y) is a log-sum-exp), where the
published code (mdistiller ``mdistiller/distillers/DKD.py`` line 15, and its copies) subtracts 1000 from the target
logit and takes ``torch.log`` of the probabilities: in float32 a confident student's p = 0 gives log 0 and an
infinite loss (target logit 120 ahead at T = 1), where kdplug's equals their code run in float64.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import LogitLoss
from .functional import (EXCLUDED_LOGIT, Temperature, check_hyperparameter, hard_labels, kl_rows, one_temperature,
                         sum_kl_terms)


def binary_log_probs(z_target: Tensor, lse_non_target: Tensor) -> Tensor:
    """log(p_y, 1 - p_y), (N, 2), from the target logit and the log-sum-exp of the non-target ones, (N, 1) each:
    log(1 - p_y) = lse_nt - logaddexp(lse_nt, z_y), stable for confident rows (no log of 1 - p_y)."""
    lse_all = torch.logaddexp(lse_non_target, z_target)
    return torch.cat([z_target - lse_all, lse_non_target - lse_all], dim=-1)


class _DKDTerms(torch.autograd.Function):
    """(TCKD, NCKD) per row from (student, T_s, teacher, T_t, target index) with the gradients written out. With
    z = x / T, q and p the student's and teacher's softmax over the non-target classes, lse_nt the student's
    non-target log-sum-exp and delta = p^s_y - p^t_y (the full softmaxes' target probabilities):

        d NCKD / d z_j = q_j - p_j  (j != y),   d TCKD / d z_y = delta,   d TCKD / d z_j = -delta * q_j  (j != y)
        d / d T_s = -sum_j (d / d z_j) * z_j / T_s                     (NormKD+DKD: a temperature from the logits)

    (TCKD reaches the non-target logits through lse_nt, whose gradient is q.) The target column is set to
    EXCLUDED_LOGIT after the division: one log-softmax per model is the non-target softmax, and no product needs a
    mask. Autograd through gathers, scatters, two log-softmaxes and the KL took twice the passes over (N, C). The
    teacher's logits and temperature take no gradient."""

    @staticmethod
    def forward(ctx, student: Tensor, t_student: Tensor, teacher: Tensor, t_teacher: Tensor,
                index: Tensor) -> Tuple[Tensor, Tensor]:
        other = (index + 1) % student.shape[1]  # a non-target class: lse_nt = z_other - log q_other
        z_s, z_t = student / t_student, teacher / t_teacher
        z_s_target, z_t_target = z_s.gather(1, index), z_t.gather(1, index)
        z_s_other, z_t_other = z_s.gather(1, other), z_t.gather(1, other)
        log_q = torch.log_softmax(z_s.scatter_(1, index, EXCLUDED_LOGIT), dim=-1)
        log_p = torch.log_softmax(z_t.scatter_(1, index, EXCLUDED_LOGIT), dim=-1)
        log_b_s = binary_log_probs(z_s_target, z_s_other - log_q.gather(1, other))
        log_b_t = binary_log_probs(z_t_target, z_t_other - log_p.gather(1, other))
        tckd = kl_rows(log_b_t, log_b_s)
        p = log_p.exp()
        nckd = sum_kl_terms(p * (log_p - log_q), p)[0]
        delta = log_b_s[:, :1].exp() - log_b_t[:, :1].exp()
        ctx.save_for_backward(log_q, p, delta, index, t_student, *((z_s, z_s_target) if ctx.needs_input_grad[1]
                                                                    else (None, None)))
        return tckd, nckd

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_tckd: Tensor, grad_nckd: Tensor) -> tuple:
        log_q, p, delta, index, t_student, z_s, z_s_target = ctx.saved_tensors
        grad_target = grad_tckd.unsqueeze(-1) * delta
        grad_nckd = grad_nckd.unsqueeze(-1)
        # q_j (g_nckd - g_tckd delta) - p_j g_nckd; 0 in the target column, where q and p are exactly 0
        grad_z = log_q.exp().mul_(grad_nckd - grad_target).addcmul_(p, grad_nckd, value=-1.0)
        grad_t = None
        if ctx.needs_input_grad[1]:  # the dot before the target column is set: z_s holds EXCLUDED_LOGIT there
            dot = (grad_z * z_s).sum(dim=-1, keepdim=True) + grad_target * z_s_target
            grad_t = -dot / t_student
        grad_student = grad_z.scatter_(1, index, grad_target).div_(t_student) if ctx.needs_input_grad[0] else None
        return grad_student, grad_t, None, None, None


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor,
              temperature: Temperature) -> Tuple[Tensor, Tensor, Tensor]:
    """(TCKD, NCKD, T_t^2) per sample, each (N,); the KL terms before the temperature weight."""
    t_teacher = temperature(teacher_logits.detach()).detach()
    tckd, nckd = _DKDTerms.apply(student_logits, temperature(student_logits), teacher_logits.detach(), t_teacher,
                                 target.unsqueeze(1))
    return tckd, nckd, temperature.compensation(t_teacher)


class DKDLoss(LogitLoss):
    """Decoupled KD: (alpha * TCKD + beta * NCKD) * T^2."""

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: Optional[float] = None,
                 t_norm: Optional[float] = None, logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        self.alpha, self.beta = check_hyperparameter('alpha', alpha), check_hyperparameter('beta', beta)
        self.temperature = one_temperature(temperature, t_norm, 4.0, 'DKDLoss')

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        target = hard_labels(target, *student_logits.shape, method='DKDLoss', soft_ok=False)
        tckd, nckd, weight = dkd_terms(student_logits, teacher_logits, target, self.temperature)
        return weight * (self.alpha * tckd + self.beta * nckd)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, beta={self.beta}, {self.temperature}, {super().extra_repr()}'
