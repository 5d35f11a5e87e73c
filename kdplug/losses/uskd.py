"""USKD: the self-distillation of Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A
Unified Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023; supplement ../shared/papers/001).

No teacher: the soft labels come from the student itself and from a weak linear head on its middle stage.
With p^s = softmax(s), w = weak-head logits, y the label and C the number of classes:

    target soft label  q_i = p^s_y(i)^2 + (1 - mean_batch(p^s_y^2))                      (detached)
    L_target = -1/N sum_i q_i * log p^s_y(i)
    non-target labels  z_i(k) = (1 / rank_i(k)) / sum_j (1 / rank_i(j)) over the C - 1 non-target classes,
                       ranked by  softmax(w_i)_k / (1 - softmax(w_i)_y) + log p^s_i(k) / (1 - p^s_y(i))   (detached)
    L_non = -1/N sum_i sum_k z_i(k) * log softmax(s_i without y)_k
    L_weak = cross-entropy of w with labels 0.9 * onehot(y) + 0.1 / C
    L_USKD = alpha * L_target + beta * L_non + mu * L_weak

The ranking follows the authors' code (weak-head probability plus the student's LOG-probability, each divided by
one minus its target probability): Zipf's law 1/rank turns the rank into the soft label. Defaults: ImageNet
alpha = 1, beta = 0.1, mu = 0.005; CIFAR-100 alpha = 0.1, beta = 0.1, mu = 0.1. Needs hard labels (soft labels from
mixup / cutmix are reduced to their argmax).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dkd import drop_target
from .functional import check_hyperparameter, hard_labels, reduce_per_sample


def zipf_non_target_labels(student_logits: Tensor, weak_logits: Tensor, target: Tensor) -> Tensor:
    """Zipf soft labels over the C - 1 non-target classes, (N, C - 1), detached."""
    with torch.no_grad():
        index = target.unsqueeze(1)
        p_weak = F.softmax(weak_logits, dim=-1)
        log_p_student = F.log_softmax(student_logits, dim=-1)
        weak_part = p_weak / (1 - p_weak.gather(1, index)).clamp_min(1e-12)
        student_part = log_p_student / (1 - log_p_student.gather(1, index).exp()).clamp_min(1e-12)
        score = drop_target(weak_part + student_part, target)
        rank = score.argsort(dim=-1, descending=True).argsort(dim=-1) + 1  # 1 = highest score
        zipf = 1.0 / rank.to(student_logits.dtype)
        return zipf / zipf.sum(dim=-1, keepdim=True)


def uskd_per_sample(student_logits: Tensor, weak_logits: Tensor, target: Tensor, alpha: float, beta: float,
                    mu: float, label_smoothing: float = 0.1) -> Tensor:
    index = target.unsqueeze(1)
    log_p_target = F.log_softmax(student_logits, dim=-1).gather(1, index).squeeze(1)
    with torch.no_grad():
        squared = log_p_target.exp().pow(2)
        soft_target = squared + (1 - squared.mean()) if squared.numel() else squared
    target_term = -soft_target * log_p_target
    zipf = zipf_non_target_labels(student_logits, weak_logits, target)
    non_target = -(zipf * F.log_softmax(drop_target(student_logits, target), dim=-1)).sum(dim=-1)
    weak = F.cross_entropy(weak_logits, target, reduction='none', label_smoothing=label_smoothing)
    return alpha * target_term + beta * non_target + mu * weak


class USKDLoss(nn.Module):
    """Self-KD loss: ``forward(student_logits, weak_logits, target)``; the weak logits come from the middle stage."""

    teacher_based = False  # its second input is trained too (the weak head), unlike a teacher's logits

    def __init__(self, alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.beta, self.mu, self.loss_weight = (
            check_hyperparameter(name, value) for name, value in
            (('alpha', alpha), ('beta', beta), ('mu', mu), ('loss_weight', loss_weight)))

    def forward(self, student_logits: Tensor, weak_logits: Tensor, target: Optional[Tensor] = None) -> Tensor:
        student_logits, weak_logits = student_logits.float(), weak_logits.float()
        if student_logits.shape != weak_logits.shape or student_logits.dim() != 2:
            raise ValueError(f'student logits {tuple(student_logits.shape)} and weak-head logits '
                             f'{tuple(weak_logits.shape)} must both be (N, C)')
        target = hard_labels(target, *student_logits.shape, method='USKDLoss', soft_ok=True)
        per_sample = uskd_per_sample(student_logits, weak_logits, target, self.alpha, self.beta, self.mu)
        return self.loss_weight * reduce_per_sample(per_sample)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, beta={self.beta}, mu={self.mu}, loss_weight={self.loss_weight}'
