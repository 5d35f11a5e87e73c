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
published code subtracts 1000 from the target logit and takes log of a clamped probability.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LogitLoss
from .functional import Temperature, check_hyperparameter, hard_labels, kl_rows


def split_log_probs(scaled_logits: Tensor, index: Tensor) -> Tuple[Tensor, Tensor]:
    """log(p_y, 1 - p_y), (N, 2), and the log-softmax over the non-target classes, (N, C) with 0 in the target
    column (``index``, (N, 1)). One fused log-softmax over the non-target classes gives both: its log-sum-exp lse_nt
    is z_j - log p_hat_j at any non-target j, and log(1 - p_y) = lse_nt - lse_all with lse_all = logaddexp(lse_nt,
    z_y): stable for confident rows (no log of 1 - p_y). The target column is set by a scatter (N values), in place
    for logits that take no gradient (the teacher's): ``scaled_logits`` must then be a tensor of the caller's own."""
    in_place = not scaled_logits.requires_grad
    other = (index + 1) % scaled_logits.shape[1]                                                # a non-target class
    z_target, z_other = scaled_logits.gather(1, index), scaled_logits.gather(1, other)        # (N, 1)
    masked = scaled_logits.scatter_(1, index, float('-inf')) if in_place else \
        scaled_logits.scatter(1, index, float('-inf'))
    non_target = F.log_softmax(masked, dim=-1)
    lse_nt = z_other - non_target.gather(1, other)
    lse_all = torch.logaddexp(lse_nt, z_target)
    binary = torch.cat([z_target - lse_all, lse_nt - lse_all], dim=-1)
    return binary, non_target.scatter_(1, index, 0.0) if in_place else non_target.scatter(1, index, 0.0)


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor,
              temperature: Temperature) -> Tuple[Tensor, Tensor, Tensor]:
    """(TCKD, NCKD, T_t^2) per sample, each (N,); the KL terms before the temperature weight."""
    t_teacher = temperature(teacher_logits)
    s = student_logits / temperature(student_logits)
    t = teacher_logits / t_teacher  # a new tensor: split_log_probs masks it in place
    index = target.unsqueeze(1)
    t_binary, t_non_target = split_log_probs(t, index)
    s_binary, s_non_target = split_log_probs(s, index)
    tckd = kl_rows(t_binary, s_binary)
    # the non-target KL in place: the target column holds 0 in both log-softmaxes and its teacher probability is
    # set to 0, so it adds exactly 0 (no mask of 0 log 0 terms needed)
    p_teacher = t_non_target.exp().scatter_(1, index, 0.0)
    nckd = (p_teacher * (t_non_target - s_non_target)).sum(dim=-1)
    return tckd, nckd, temperature.compensation(t_teacher)


class DKDLoss(LogitLoss):
    """Decoupled KD: (alpha * TCKD + beta * NCKD) * T^2."""

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: Optional[float] = None,
                 t_norm: Optional[float] = None, logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        self.alpha, self.beta = check_hyperparameter('alpha', alpha), check_hyperparameter('beta', beta)
        self.temperature = Temperature(temperature, t_norm, default=4.0)

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        target = hard_labels(target, *student_logits.shape, method='DKDLoss', soft_ok=False)
        tckd, nckd, weight = dkd_terms(student_logits, teacher_logits, target, self.temperature)
        return weight * (self.alpha * tckd + self.beta * nckd)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, beta={self.beta}, {self.temperature}, {super().extra_repr()}'
