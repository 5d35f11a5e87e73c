"""USKD: the self-distillation of Yang, Zeng, Li, Zhang, Yuan and Li, "From Knowledge Distillation to
Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023,
arXiv:2303.13005).

No teacher: the soft labels come from the student itself and from a weak linear head on its middle stage. kdplug
computes what the authors' code computes: yzd-v/cls_KD, ``mmcls/models/dis_losses/uskd.py`` (commit 1e5d48f),
cited below as "their line L". With s the student's logits, w the weak head's, C classes and, per sample, the
labels l_1 (and l_2) with weights v_1 (and v_2):

* labels (lines 33-39): a hard label y gives one label l_1 = y, v_1 = 1. A soft label (mixup / cutmix) gives its
  two largest entries, l_1, l_2 with their weights v_1, v_2 (the top-2 of a sort, ties to the lower class index).
* target term (lines 44-55), q detached::

      q_ij = p_s(l_ij)^2 + v_ij - mean_batch(p_s(l_.j)^2)       (0 where v_ij = 0; the mean is per label column)
      L_target_i = -sum_j q_ij * log p_s(l_ij)

* weak head (lines 58-66): L_weak_i = -sum_k t_ik log softmax(w_i)_k with t = 0.9 * onehot(y) + 0.1 / C, or
  t = 0.9 * (the whole soft label) + 0.1 / C for soft labels.
* non-target labels (lines 69-87), detached: every class k of ALL C, the labels included, is ranked by::

      score_k = p_w(k) / (1 - sum_j p_w(l_j) + 1e-6) + log p_s(k) / (1 - sum_j log p_s(l_j) + 1e-6)

  The second denominator is one minus the LOG-probability of the labels (their line 53 reassigns ``s_i``/``s_t``
  to log-probabilities before line 73 uses them): this is their code, not a typo of kdplug's. Zipf's law turns the
  rank (1 = highest score) into 1 / rank (lines 76-79); only then are the labels dropped and the rest renormalised
  (lines 81-87): z_i(k) = (1 / rank_k) / sum_{k' not a label} (1 / rank_k'). A label that ranks first leaves the
  non-target classes 1/2 ... 1/C, not 1 ... 1/(C - 1).
* non-target term (lines 83-90): L_non_i = -sum_k z_i(k) * log softmax(s_i without its labels)_k.
* L_USKD = 1/N sum_i (alpha * L_target_i + beta * L_non_i + mu * L_weak_i)  (line 93; mu sits in line 66).

Where their code has no defined result, kdplug decides: a soft label whose second weight is 0 (a sample mixed with
its own class, or a one-hot soft label) has one label, as a hard label would; their line 34 would drop whichever
class the sort put second among the zeros (``p_t[value == 0] = 0`` zeroes its target weight, but it still leaves
the non-target set and enters both denominators). The batch mean of column 2 runs over the samples that have a
second label. So one-hot soft labels give exactly the hard-label loss. Defaults: ImageNet alpha = 1, beta = 0.1,
mu = 0.005; CIFAR-100 alpha = 0.1, beta = 0.1, mu = 0.1.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .functional import (EXCLUDED_LOGIT, PROBABILITY_FLOOR, check_class_count, check_hyperparameter, descending_order,
                         hard_labels, reads_are_cheap, reduce_per_sample, softmax_parts)

#: Weak-head label smoothing of the authors' code (their lines 59 and 61).
WEAK_LABEL_SMOOTHING = 0.1
#: Added to both denominators of the ranking score (their line 73).
RANK_EPS = 1e-6


def uskd_labels(target: Optional[Tensor], num_samples: int, num_classes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(labels, weights, active), each (N, K): K = 1 for hard labels (weight 1); K = 2 for soft labels (N, C), their
    two largest entries (stable sort: ties go to the lower class index). ``active`` is False for a second label of
    weight 0: such a label does not exist for the loss."""
    indices = hard_labels(target, num_samples, num_classes, method='USKDLoss', soft_ok=True)  # checks the shapes
    if target.dim() == 1:
        labels = indices.unsqueeze(1)
        weights = torch.ones(labels.shape, device=labels.device)
        return labels, weights, torch.ones_like(labels, dtype=torch.bool)
    weights, labels = target.float().sort(dim=-1, descending=True, stable=True)
    weights, labels = weights[:, :2], labels[:, :2]
    active = torch.ones_like(labels, dtype=torch.bool)
    active[:, 1:] = weights[:, 1:] > 0
    return labels, weights, active


def ranking_score(student_logits: Tensor, p_weak: Tensor, log_p_label: Tensor, p_weak_label: Tensor, active: Tensor
                  ) -> Tensor:
    """The authors' ranking score (their line 73) of every class (N, C), less a constant per row, which leaves each
    row's order as it is: their log p_k is s_k - logsumexp(s), and s_k saves a pass. ``log_p_label`` and
    ``p_weak_label`` (N, K): the student's log-probabilities and the weak head's probabilities at the labels."""
    weak_label = (p_weak_label * active).sum(1, keepdim=True)
    student_label = (log_p_label * active).sum(1, keepdim=True)  # log p: the authors' code (module docstring)
    return torch.addcmul(p_weak / (1 - weak_label + RANK_EPS), student_logits, 1 / (1 - student_label + RANK_EPS))


def zipf_non_target_ranks(score: Tensor, labels: Tensor, active: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Zipf's 1 / rank of every class (N, C) by ``score`` (1 = highest), 0 on each sample's labels, not yet
    renormalised; the inverse of each row's sum (N, 1), 0 where no class is left; the label columns dropped (N, K).

    Ranks all C classes (labels included), then drops the labels, as the authors' code does."""
    with torch.no_grad():
        # ties to the lower class index (a stable sort). One sort, and each class's 1 / rank scattered to it, not
        # the two argsorts of the authors' code: the sort is the largest part of the loss's time
        order = descending_order(score)
        num_classes = score.shape[-1]
        one_over_rank = 1.0 / torch.arange(1, num_classes + 1, device=score.device, dtype=score.dtype)
        ranks = torch.empty_like(score).scatter_(1, order, one_over_rank.expand_as(score))
        # each row's sum is sum_r 1/r less its labels' 1/rank: two passes over (N, C) fewer than summing the row
        kept_sum = one_over_rank.sum() - (ranks.gather(1, labels) * active).sum(1, keepdim=True)
        dropped = torch.where(active, labels, labels[:, :1])  # an inactive label drops nothing new
        ranks.scatter_(1, dropped, 0.0)
        # a kept class adds at least 1 / C: below half of that, no class is left (C = 2 and two labels)
        inverse_sum = torch.where(kept_sum > 0.5 / num_classes, 1.0 / kept_sum, 0.0)
        return ranks, inverse_sum, dropped


def zipf_non_target_labels(log_p_student: Tensor, p_weak: Tensor, labels: Tensor, active: Tensor
                           ) -> Tuple[Tensor, Tensor]:
    """The Zipf soft labels z (N, C), 0 on each sample's labels and renormalised, and the label columns they drop
    (N, K); detached. ``log_p_student``: the student's log-probabilities, ``p_weak``: the weak head's probabilities."""
    score = ranking_score(log_p_student, p_weak, log_p_student.gather(1, labels), p_weak.gather(1, labels), active)
    ranks, inverse_sum, dropped = zipf_non_target_ranks(score, labels, active)
    return ranks.mul_(inverse_sum), dropped


def kept_softmax(student: Tensor, p: Tensor, lse: Tensor, dropped: Tensor
                 ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """The softmax over the classes that are no label, r (N, C), as ``kept``, ``scale_non``, ``scale_target`` with
    r = kept * scale_non and p = kept * scale_target on the kept columns (None: 1), and logsumexp over the kept
    logits (N, 1). ``p``: softmax(student), set to 0 on the dropped columns here (in place).

    From p: r = p / m with m the kept classes' mass (a sum of small numbers: no 1 - p(labels) cancels). Where m is
    below PROBABILITY_FLOOR (labels holding all but e^-46 of the mass; its p_k lose digits or underflow), from a
    log-softmax over the kept logits, the labels' set to EXCLUDED_LOGIT (probability exactly 0, finite: a sample
    with no class left, C = 2 and two labels, gives 0 in value and gradient, not NaN)."""
    kept = p.scatter_(1, dropped, 0.0)
    mass = kept.sum(dim=-1, keepdim=True)
    if reads_are_cheap(p) and bool((mass >= PROBABILITY_FLOOR).all()):
        return kept, 1 / mass, None, lse + mass.log()
    masked = student.scatter(1, dropped, EXCLUDED_LOGIT)
    lse_kept = torch.logsumexp(masked, dim=-1, keepdim=True)
    return masked.sub_(lse_kept).exp_(), None, (lse_kept - lse).exp_(), lse_kept


class _USKDTerms(torch.autograd.Function):
    """alpha * L_target + beta * L_non + mu * L_weak per row with the gradients written out. With p = softmax(s),
    r = softmax(s without the labels), z the Zipf labels (their sum Z_1 is 1, or 0 when no class is left),
    p_w = softmax(w), t the weak head's smoothed labels (0.9 * label + 0.1 / C) and q the detached target weights:

        d L_target / d s = (sum_j q_j) p - sum_j q_j e_(l_j)
        d L_non / d s    = Z_1 r - z                           (0 in the label columns: r and z are 0 there)
        d L_weak / d w   = (sum_k t_k) p_w - t

    One softmax per model gives every term: log p at the labels, logsumexp from them (:func:`softmax_parts`),
    L_non = Z_1 logsumexp(kept logits) - z . s and r from p (:func:`kept_softmax`), sum_k log p_w(k) =
    sum_k w_k - C logsumexp(w). On this CPU a loss's time is its passes over (N, C) and its calls: three
    log-softmaxes, an exp of each and the kept logits' copy cost more than the ranking's sort."""

    @staticmethod
    def forward(ctx, student: Tensor, weak: Tensor, labels: Tensor, weights: Tensor, active: Tensor,
                soft: Optional[Tensor], alpha: float, beta: float, mu: float) -> Tensor:
        num_classes = student.shape[-1]
        p, p_label, log_p_label, lse = softmax_parts(student, labels)
        p_weak, p_weak_label, log_p_weak_label, lse_weak = softmax_parts(weak, labels)
        squared = p_label.square()
        column_mean = (squared * active).sum(0) / active.sum(0).clamp_min(1)
        q = torch.where(active & (weights > 0), squared + weights - column_mean, 0.0)
        target_term = -(q * log_p_label).sum(dim=-1)

        score = ranking_score(student, p_weak, log_p_label, p_weak_label, active)
        ranks, inverse_sum, dropped = zipf_non_target_ranks(score, labels, active)  # z = ranks * inverse_sum
        p_dropped = p_label * active  # p at the dropped columns; 0 for an inactive label (it repeats the first)
        kept, scale_non, scale_target, lse_kept = kept_softmax(student, p, lse, dropped)
        # -z . (s - logsumexp(kept)): Z_1 is 1, or 0 where no class is left (then lse_kept is -1e30 and counts 0)
        non_target = (lse_kept * (inverse_sum > 0)).squeeze(-1) - torch.linalg.vecdot(ranks, student) * \
            inverse_sum.squeeze(-1)

        # cross-entropy with (1 - e) * label + e / C: (1 - e) * (label . log p) + e / C * sum_k log p_k
        lse_weak = lse_weak.squeeze(-1)
        labelled = log_p_weak_label[:, 0] if soft is None else torch.linalg.vecdot(soft, weak) - soft.sum(-1) * lse_weak
        weak_term = -((1 - WEAK_LABEL_SMOOTHING) * labelled +
                      WEAK_LABEL_SMOOTHING / num_classes * (weak.sum(dim=-1) - num_classes * lse_weak))
        ctx.weights = alpha, beta, mu
        ctx.save_for_backward(kept, scale_non, scale_target, p_dropped, dropped, ranks, inverse_sum, q, labels, p_weak,
                              soft)
        return alpha * target_term + beta * non_target + mu * weak_term

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple:
        kept, scale_non, scale_target, p_dropped, dropped, ranks, inverse_sum, q, labels, p_weak, soft = \
            ctx.saved_tensors
        alpha, beta, mu = ctx.weights
        grad = grad.unsqueeze(-1)
        grad_student = grad_weak = None
        if ctx.needs_input_grad[0]:
            grad_non, grad_target = beta * grad, alpha * grad * q
            target_sum = grad_target.sum(dim=-1, keepdim=True)
            # Z_1 r + (sum_j q_j) p on the kept columns, one pass; r = 0 where no class is left (Z_1 = 0)
            coefficient = grad_non * (inverse_sum > 0)
            coefficient = (coefficient if scale_non is None else coefficient * scale_non) + \
                (target_sum if scale_target is None else target_sum * scale_target)
            grad_student = kept * coefficient
            grad_student.addcmul_(ranks, grad_non * inverse_sum, value=-1.0)  # - z
            grad_student.scatter_add_(1, dropped, p_dropped * target_sum)  # (sum_j q_j) p on the label columns
            grad_student.scatter_add_(1, labels, -grad_target)
        if ctx.needs_input_grad[1]:
            grad_weak_term, smoothing = mu * grad, WEAK_LABEL_SMOOTHING
            label_sum = 1.0 if soft is None else soft.sum(dim=-1, keepdim=True)  # sum_k t_k
            grad_weak = torch.addcmul(grad_weak_term * (-smoothing / p_weak.shape[-1]), p_weak,
                                      ((1 - smoothing) * label_sum + smoothing) * grad_weak_term)
            if soft is None:
                grad_weak.scatter_add_(1, labels[:, :1], grad_weak_term * -(1 - smoothing))
            else:
                grad_weak.addcmul_(soft, grad_weak_term, value=-(1 - smoothing))
        return grad_student, grad_weak, None, None, None, None, None, None, None


def uskd_per_sample(student_logits: Tensor, weak_logits: Tensor, target: Tensor, alpha: float, beta: float,
                    mu: float) -> Tensor:
    """alpha * L_target + beta * L_non + mu * L_weak of each sample, (N,); ``target`` hard (N,) or soft (N, C)."""
    num_samples, num_classes = student_logits.shape
    labels, weights, active = uskd_labels(target, num_samples, num_classes)
    soft = target.to(student_logits) if target.dim() == 2 else None
    return _USKDTerms.apply(student_logits, weak_logits, labels, weights.to(student_logits), active, soft, alpha,
                            beta, mu)


class USKDLoss(nn.Module):
    """Self-KD loss: ``forward(student_logits, weak_logits, target)``; the weak logits come from the middle stage.

    ``target``: hard labels (N,) or soft labels (N, C) (mixup / cutmix: the two largest entries count, see the
    module docstring)."""

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
        check_class_count(student_logits)
        per_sample = uskd_per_sample(student_logits, weak_logits, target, self.alpha, self.beta, self.mu)
        return self.loss_weight * reduce_per_sample(per_sample)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, beta={self.beta}, mu={self.mu}, loss_weight={self.loss_weight}'
