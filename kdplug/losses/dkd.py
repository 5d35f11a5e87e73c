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
from torch import Tensor

from .base import LogitLoss
from .functional import Temperature, check_hyperparameter, hard_labels, kl_rows, non_target_log_softmax, target_mask


def binary_log_probs(scaled_logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """log(p_y, 1 - p_y) of softmax(scaled_logits), (N, 2), stable for confident rows (``mask``: the targets)."""
    log_all = torch.logsumexp(scaled_logits, dim=-1)
    log_target = scaled_logits.gather(1, target.unsqueeze(1)).squeeze(1) - log_all
    log_other = torch.logsumexp(scaled_logits.masked_fill(mask, float('-inf')), dim=-1) - log_all
    return torch.stack([log_target, log_other], dim=-1)


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor,
              temperature: Temperature) -> Tuple[Tensor, Tensor, Tensor]:
    """(TCKD, NCKD, T_t^2) per sample, each (N,); the KL terms before the temperature weight."""
    s = student_logits / temperature(student_logits)
    t = teacher_logits / temperature(teacher_logits)
    mask = target_mask(s, target)
    tckd = kl_rows(binary_log_probs(t, target, mask), binary_log_probs(s, target, mask))
    nckd = kl_rows(non_target_log_softmax(t, mask), non_target_log_softmax(s, mask))
    return tckd, nckd, temperature.compensation(temperature(teacher_logits))


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
