"""MLKD: Jin, Wang and Lin, "Multi-Level Logit Distillation", CVPR 2023 (pp. 24276-24285, DOI
10.1109/CVPR52729.2023.02325; no arXiv version), computed as its authors' code computes it; with
``logit_norm='zscore'`` it is MLKD + logit standardization (Sun, Ren, Li, Wang and Cao, "Logit Standardization in
Knowledge Distillation", CVPR 2024, arXiv:2403.01427) as the LS authors' code computes it.

MLKD aligns teacher and student at three levels (instance, batch, class), each at the five temperatures
T_j in (T, 3, 5, 2, 6) ("prediction augmentation"; T the loss's ``temperature``), on two views of every image: a
weak one (crop + flip) and a strong one (the same + RandAugment + Cutout). The two views reach the loss stacked
along the batch: with ``views=2`` its input is (2N, C), the N rows of the weak view, then the N rows of the strong
view (the distiller does this when the pipeline has mmpretrain's ``MultiView``; docs/losses.md). ``views=1`` is
MLKD on one view: the weak view's terms only (kdplug's variant, for pipelines without ``MultiView``).

For one view v (w: weak, s: strong), with x~ = logit_norm(x) and P_x = softmax(x / T_j) row by row (N x C)::

    instance  I_ij^v = T_j^2 KL( softmax(t~_i^v / T_j) || softmax(s~_i^v / T_j) )          (per sample)
    batch     D^B_j  = (P_t P_t^T - P_s P_s^T)^2      (N x N, entrywise square; weak view, raw logits)
    class     D^C_j  = (P_t^T P_t - P_s^T P_s)^2      (C x C; weak view, raw logits)
    masks     m_i = [conf_i <= median_i conf_i],  conf_i = max_c softmax(t_i^w)_c         (per sample)
              k_c = [q_c <= median_c q_c],        q_c = sum_i softmax(t_i^w)_c             (per class)

(the masks from the teacher's raw logits of the weak view at temperature 1; median = numpy's 50th percentile,
linear interpolation; j = 1..5 here, :func:`mlkd_terms` keys count from 0). The authors' computation,
:class:`MLKDLoss`::

    L = sum_j mean_i(m) * 1/N sum_i I_ij^w                      (masked weak instance terms: quirk 1)
      + sum_{j = 1..3} 1/N sum_i I_ij^s + sum_{j = 4, 5} 1/N sum_i I_ij^w        (strong instance terms: quirk 2)
      + sum_j mean_c(k) * 1/C sum_cd D^C_j,cd                   (class terms: quirk 1)
      + sum_j mean_i(m) * 1/N sum_ab D^B_j,ab                   (batch terms: quirk 1)

and the corrected form, :class:`CorrectedMLKDLoss`, where each mask selects what it indexes::

    L = sum_j 1/N sum_i m_i I_ij^w + sum_j 1/N sum_i I_ij^s
      + sum_j 1/C sum_cd D^C_j,cd k_d + sum_j 1/N sum_ab D^B_j,ab m_b

The loss is ``loss_weight * L`` (their ``KD_WEIGHT`` multiplies every term). The student's own cross-entropy on
both views, w_ce (CE(weak) + CE(strong)), is the student's head loss: the distiller sums it over the views.

What kdplug follows, file by file: the authors' Jin-Ying/Multi-Level-Logit-Distillation at commit 5ee473f,
``mdistiller/distillers/KD_ours.py`` (class ``KD_ours``), and the LS authors' copy with the z-score,
sunshangquan/logit-standardization-KD at commit f6e5aa5, ``mdistiller/distillers/MLKD.py`` (class ``MLKD``); lines
as "KD_ours L / MLKD L":

* instance term: ``kd_loss`` (KD_ours 13-21 / MLKD 17-28), the batch mean of T^2 KL(teacher || student);
  batch term ``bc_loss`` (KD_ours 37-47 / MLKD 44-54): the sum of squared differences of the N x N Gram matrices of
  the probabilities, over N; class term ``cc_loss`` (KD_ours 24-34 / MLKD 31-41): of the C x C ones, over C
  (the same sums, computed differently: :func:`gram_terms` forms no C x C matrix when N < C);
* masks (KD_ours 98-111 / MLKD 106-119): ``confidence.le(np.percentile(confidence, 50))`` and the same on the
  class sums: m keeps the less confident half of the samples, k the less predicted half of the classes;
* the objective (KD_ours 249-254 / MLKD 267-272): ``loss_kd = loss_kd_weak + loss_kd_strong``, ``loss_cc =
  loss_cc_weak``, ``loss_bc = loss_bc_weak``. The strong view's class and batch terms are computed (KD_ours
  186-206 and 228-248 / MLKD 204-224 and 246-266) but left out of the returned losses: kdplug leaves them out too,
  in both forms; the strong view enters through its instance terms (and the student's cross-entropy) only;
* logit standardization (MLKD 12-19): ``normalize`` ((x - mean) / (1e-7 + std), unbiased std) is applied inside
  ``kd_loss`` only, to both models' logits, before the temperature; ``cc_loss``, ``bc_loss`` and the masks take
  the raw logits. kdplug applies ``logit_norm`` the same way, in both forms: to the instance terms only.

The quirks (:class:`MLKDLoss` keeps them; :class:`CorrectedMLKDLoss` corrects them):

1. Masks on an already averaged loss. ``(kd_loss(...) * mask).mean()`` (KD_ours 115-140 / MLKD 123-153): ``kd_loss``
   returns the batch mean, a scalar (the ``reduce=False`` that would keep one value per sample is commented out on
   each term, KD_ours 119, 124, ... / MLKD 127, 133, ...), so the mask does not select samples: it scales the
   whole batch's mean by the fraction of masked samples, mean(m) (1/2, or a little more with an odd N or ties).
   The same holds for the class terms, ``(cc_loss(...) * class_conf_mask).mean()`` (KD_ours 164-185 / MLKD
   182-203), scaled by mean(k), and for the batch terms, ``(bc_loss(...) * mask).mean()`` (KD_ours 207-227 / MLKD
   225-245), scaled by mean(m). Corrected: the instance term sums m_i I_ij over the samples (what the commented
   ``reduce=False`` computes), the class and batch terms weight the columns of D^C, D^B by k and m (where the
   authors' broadcasting of the unreduced matrices would put the masks), each with the normalisation of its
   reduced form (1/N, 1/C, 1/N), so that the three levels keep the scale the authors trained with.
2. Weak logits in strong terms: of the five strong instance terms, the ones at T = 2 and T = 6 take
   ``logits_student_weak, logits_teacher_weak`` (KD_ours 154-162 / MLKD 170-179; also the unused class terms,
   KD_ours 198-206 / MLKD 216-223). The weak view's unmasked T = 2 and T = 6 terms are counted again there.
   Corrected: the strong view's logits at all five temperatures.

Row weights (``weight``, the distiller's way to leave out teacher rows with a NaN or inf): MLKD's batch and class
terms compare whole batches, so a weight is a keep mask here, never a per-sample factor: a sample is kept when its
weight is > 0 in every view; the others leave every term, the medians and the counts (N above is the number of
kept samples). Labels are not used (the ground truth enters through the student's cross-entropy only).
Defaults: T = 4 (the MLKD authors' ``mdistiller/engine/cfg.py`` line 61, with w_ce = 0.1 and w_kd = 0.9 in lines
63-64); MLKD + LS: T = 2, w_kd = 9 (configs/mlkd/README.md).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import LogitLoss
from .functional import Temperature, apply_logit_norm, check_hyperparameter, check_logits, valid_row_weights
from .kd import kd_per_sample

#: The temperatures after the loss's own, in the authors' order (KD_ours lines 115-162): (T, 3, 5, 2, 6).
MLKD_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)
#: Positions in (T, 3, 5, 2, 6) of the strong instance terms the authors compute on the weak view (quirk 2).
WEAK_IN_STRONG = (3, 4)
VIEWS = (1, 2)
VIEW_NAMES = ('weak', 'strong')

TermKey = Tuple[str, str, int]


def temperature_set(temperature: float) -> Tuple[float, ...]:
    """The five temperatures of MLKD's prediction augmentation: (T, 3, 5, 2, 6)."""
    return (float(temperature),) + MLKD_TEMPERATURES


def confidence_masks(teacher_weak: Tensor, keep: Tensor) -> Tuple[Tensor, Tensor]:
    """The sample mask m (N,) and the class mask k (C,), 0 / 1 floats, from the teacher's raw weak-view logits:
    m_i = [max_c p_ic <= median over the kept samples], k_c = [sum_i p_ic <= median over the classes], p = softmax
    at temperature 1; left-out samples (keep 0) have m_i = 0 and add nothing to the class sums."""
    kept = keep.unsqueeze(-1) > 0
    probs = torch.where(kept, F.softmax(teacher_weak, dim=-1), torch.zeros_like(teacher_weak))
    confidence = torch.where(keep > 0, probs.amax(dim=-1), torch.full_like(keep, float('nan')))
    sample_mask = confidence <= torch.nanquantile(confidence, 0.5)  # NaN (left out) compares False
    class_confidence = probs.sum(dim=0)
    class_mask = class_confidence <= torch.quantile(class_confidence, 0.5)
    return sample_mask.to(teacher_weak.dtype), class_mask.to(teacher_weak.dtype)


def instance_rows(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(t_i / T) || softmax(s_i / T)) of each row, (N,): KD's per-sample loss."""
    return kd_per_sample(student_logits, teacher_logits, Temperature(temperature))


def weighted_both_ways(matrix: Tensor, weight: Optional[Tensor], scale: Tensor) -> Tensor:
    """scale * (matrix o (w_a + w_b)), w = 1 when None: the gradient of sum_ab X_ab^2 w_b / 2 with respect to a
    symmetric X, whose entry X_ab is also X_ba."""
    if weight is None:
        return matrix * (2 * scale)
    return matrix * (weight.unsqueeze(0) + weight.unsqueeze(1)) * scale


class _GramTerms(torch.autograd.Function):
    """(L_B, L_C): L_B = sum_ab E_ab^2 w_b and L_C = sum_cd F_cd^2 k_d, the differences of the Gram matrices of
    the probabilities, E = P_s P_s^T - P_t P_t^T (N x N) and F = P_s^T P_s - P_t^T P_t (C x C), with column weights
    w (N,) and k (C,) (None: 1). The gradient, written out (autograd would take two backward products for each
    forward one)::

        d L_B / d P_s = 2 (E o (w_a + w_b)) P_s,     d L_C / d P_s = 2 P_s (F o (k_c + k_d))

    With S = (P_s + P_t) / 2 and D = P_s - P_t, E = S D^T + D S^T and F = S^T D + D^T S: no two nearly equal Grams
    are subtracted (the authors' code subtracts them). With fewer samples than classes F is never formed: with
    X_k = X diag(k), L_C = <S S^T, D_k D^T> + 2 <D S^T, S_k D^T> + <D D^T, S_k S^T> and P_s (F o (k_c + k_d)) =
    (P_s S^T) D_k + (P_s D^T) S_k + (P_s,k S^T) D + (P_s,k D^T) S, N x N Grams only (N^2 C products each, not
    N C^2). Each product holds a D, small when the student nears its teacher, where the shorter identity
    ||P_s P_s^T||^2 - 2 ||P_s P_t^T||^2 + ||P_t P_t^T||^2 would subtract nearly equal numbers."""

    @staticmethod
    def forward(ctx, p_student: Tensor, p_teacher: Tensor, sample_weight: Optional[Tensor],
                class_weight: Optional[Tensor]) -> Tensor:
        mean, difference = (p_student + p_teacher) * 0.5, p_student - p_teacher
        num_samples, num_classes = p_student.shape
        cross = mean @ difference.t()  # S D^T
        # D S^T: with few classes a product is faster than reading the N x N matrix S D^T across its rows
        cross_t = difference @ mean.t() if num_samples >= num_classes else cross.t()
        batch = cross + cross_t
        squared = batch.square()
        batch_sum = squared.sum() if sample_weight is None else (squared @ sample_weight).sum()
        ctx.classes_formed, ctx.class_weighted = num_samples >= num_classes, class_weight is not None
        if ctx.classes_formed:
            classes = torch.addmm(mean.t() @ difference, difference.t(), mean)  # F = S^T D + D^T S
            squared = classes.square()
            class_sum = squared.sum() if class_weight is None else (squared @ class_weight).sum()
            ctx.save_for_backward(p_student, batch, sample_weight, classes, class_weight)
        else:
            grams = [mean @ mean.t(), difference @ difference.t()]  # S S^T, D D^T
            if class_weight is None:  # k = 1: X_k = X, and L_C = 2 <S S^T, D D^T> + 2 <D S^T, S D^T>
                mean_k, difference_k, weighted = mean, difference, grams + [cross]
                class_sum = 2 * (grams[0] * grams[1]).sum() + 2 * (cross_t * cross).sum()
            else:  # S_k S^T, D_k D^T, S_k D^T
                mean_k, difference_k = mean * class_weight, difference * class_weight
                weighted = [mean_k @ mean.t(), difference_k @ difference.t(), mean_k @ difference.t()]
                class_sum = (grams[0] * weighted[1]).sum() + 2 * (cross_t * weighted[2]).sum() + \
                    (grams[1] * weighted[0]).sum()
            ctx.save_for_backward(p_student, batch, sample_weight, mean, difference, mean_k, difference_k, cross,
                                  cross_t, *grams, *weighted)
        return torch.stack([batch_sum, class_sum])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None, None]:
        p_student, batch, sample_weight = ctx.saved_tensors[:3]
        batch_grad, class_grad = grad.unbind()
        batch_coefficient = weighted_both_ways(batch, sample_weight, 2 * batch_grad)  # 2 (E o (w_a + w_b))
        if ctx.classes_formed:
            classes, class_weight = ctx.saved_tensors[3:]
            class_coefficient = weighted_both_ways(classes, class_weight, 2 * class_grad)
            return torch.addmm(batch_coefficient @ p_student, p_student, class_coefficient), None, None, None
        mean, difference, mean_k, difference_k, cross, cross_t, mean_gram, difference_gram, \
            mean_k_gram, difference_k_gram, cross_k = ctx.saved_tensors[3:]
        scale = 2 * class_grad
        # P_s S^T = S S^T + D S^T / 2 (times D_k), P_s D^T = S D^T + D D^T / 2 (times S_k), the same with P_s,k
        # (times D and S); P_s = S + D / 2: the batch term's coefficient of P_s joins those of S and D
        of_difference_k = torch.add(mean_gram, cross_t, alpha=0.5).mul_(scale)
        of_mean_k = torch.add(cross, difference_gram, alpha=0.5).mul_(scale)
        if not ctx.class_weighted:  # k = 1: P_s,k = P_s, two products instead of four
            grad_student = of_difference_k.mul_(2).add_(batch_coefficient, alpha=0.5) @ difference
            return grad_student.addmm_(of_mean_k.mul_(2).add_(batch_coefficient), mean), None, None, None
        grad_student = of_difference_k @ difference_k
        grad_student.addmm_(of_mean_k, mean_k)
        of_difference = torch.add(mean_k_gram, cross_k.t(), alpha=0.5).mul_(scale)
        grad_student.addmm_(of_difference.add_(batch_coefficient, alpha=0.5), difference)
        of_mean = torch.add(cross_k, difference_k_gram, alpha=0.5).mul_(scale)
        return grad_student.addmm_(of_mean.add_(batch_coefficient), mean), None, None, None


def gram_terms(student_logits: Tensor, teacher_logits: Tensor, temperature: float, keep: Tensor,
               sample_weight: Optional[Tensor] = None, class_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The batch term sum_ab (P_t P_t^T - P_s P_s^T)_ab^2 w_b (N x N) and the class term sum_cd (P_t^T P_t -
    P_s^T P_s)_cd^2 k_d (C x C) of the probabilities at ``temperature``; w = ``sample_weight`` (N,), k =
    ``class_weight`` (C,), default 1. Left-out rows (keep 0) are zero in both models' probabilities."""
    # a product, not a select: the distiller has zeroed a non-finite teacher row before giving it keep 0
    kept = (keep > 0).to(student_logits).unsqueeze(-1)
    p_s = F.softmax(student_logits / temperature, dim=-1) * kept
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=-1) * kept
    batch_sum, class_sum = _GramTerms.apply(p_s, p_t, sample_weight, class_weight).unbind()
    return batch_sum, class_sum


def mlkd_terms(student_views: Sequence[Tensor], teacher_views: Sequence[Tensor], temperature: float,
               logit_norm: Optional[str] = None, corrected: bool = False,
               keep: Optional[Tensor] = None) -> Dict[TermKey, Tensor]:
    """Every term of L (module docstring), before ``loss_weight``, keyed (level, view, j): level 'instance',
    'batch' or 'class', view 'weak' or 'strong', j the position of the temperature in (T, 3, 5, 2, 6).

    ``student_views`` / ``teacher_views``: the weak view's (N, C) logits, then the strong view's if there is one;
    ``keep`` (N,): 1 for the samples that count, 0 for those left out (default: all count). ``corrected``: the
    corrected form's terms, not the authors' (module docstring).
    """
    weak_s, weak_t = student_views[0], teacher_views[0]
    num_samples, num_classes = weak_s.shape
    keep = weak_s.new_ones(num_samples) if keep is None else keep.to(weak_s)
    count = keep.sum().clamp_min(1.0)
    sample_mask, class_mask = confidence_masks(weak_t, keep)
    sample_fraction, class_fraction = sample_mask.sum() / count, class_mask.mean()
    normed_s = [apply_logit_norm(x, logit_norm) for x in student_views]
    normed_t = [apply_logit_norm(x, logit_norm) for x in teacher_views]

    def kept_rows(view: int, temperature_j: float) -> Tensor:
        rows = instance_rows(normed_s[view], normed_t[view], temperature_j)
        return torch.where(keep > 0, rows, torch.zeros_like(rows))

    terms: Dict[TermKey, Tensor] = {}
    for j, temperature_j in enumerate(temperature_set(temperature)):
        weak_rows = kept_rows(0, temperature_j)
        if corrected:
            terms[('instance', 'weak', j)] = (sample_mask * weak_rows).sum() / count
        else:  # quirk 1: the batch mean, scaled by the fraction of masked samples
            terms[('instance', 'weak', j)] = sample_fraction * weak_rows.sum() / count
        if len(student_views) > 1:
            weak_logits = not corrected and j in WEAK_IN_STRONG  # quirk 2: the weak view's logits at T = 2 and 6
            strong_rows = weak_rows if weak_logits else kept_rows(1, temperature_j)
            terms[('instance', 'strong', j)] = strong_rows.sum() / count
        # quirk 1 again (the authors'): whole sums scaled by the masks' fractions; corrected: the masks weigh columns
        weights = (sample_mask, class_mask) if corrected else (None, None)
        scales = (1.0, 1.0) if corrected else (sample_fraction, class_fraction)
        batch, classes = gram_terms(weak_s, weak_t, temperature_j, keep, *weights)
        terms[('batch', 'weak', j)] = scales[0] * batch / count
        terms[('class', 'weak', j)] = scales[1] * classes / num_classes
    return terms


class MLKDLoss(LogitLoss):
    """MLKD; ``MLKDLoss(temperature=2.0, views=2, logit_norm='zscore', loss_weight=9.0)`` is MLKD + LS.

    ``views=2`` (the paper's method) takes the two views' logits stacked along the batch, (2N, C): weak rows, then
    strong rows; the distiller refuses a pipeline without mmpretrain's ``MultiView`` for it. ``views=1`` is MLKD on
    a single view (its weak-view terms). The authors' computation, quirks included (module docstring);
    :class:`CorrectedMLKDLoss` corrects them.
    """

    #: Its batch- and class-level terms compare the rows of a batch with each other (N x N Grams): the rows must be
    #: the batch's images; the distiller refuses it for tasks whose rows are RoIs or pixels (memory N^2, other terms).
    compares_rows = True

    #: The corrected form's terms (:class:`CorrectedMLKDLoss`), not the authors'.
    corrected = False

    def __init__(self, temperature: float = 4.0, views: int = 1, logit_norm: Optional[str] = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        if isinstance(views, bool) or views not in VIEWS:
            raise ValueError(f'views={views!r}: MLKD takes 2 views of every image (weak, strong; a MultiView '
                             'pipeline) or 1 (its weak-view terms only)')
        self.temperature = check_hyperparameter('temperature', temperature, strict=True)
        self.views = views

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor] = None,
                weight: Optional[Tensor] = None) -> Tensor:
        student_logits, teacher_logits = check_logits(student_logits, teacher_logits)
        rows = student_logits.shape[0]
        if rows % self.views:
            raise ValueError(f'MLKDLoss(views={self.views}) takes the logits of the {self.views} views stacked '
                             f'along the batch, ({self.views}N, C) with the weak view first; got {rows} rows')
        num_samples = rows // self.views
        keep = None
        if weight is not None:
            kept_rows = valid_row_weights(weight, rows).detach() > 0
            keep = kept_rows.reshape(self.views, num_samples).all(dim=0).to(student_logits)
        if num_samples == 0:
            return student_logits.sum() * 0.0
        with torch.autocast(device_type=student_logits.device.type, enabled=False):  # Gram matrices in float32
            terms = mlkd_terms(student_logits.split(num_samples), teacher_logits.split(num_samples),
                               self.temperature, self.logit_norm, self.corrected, keep)
        return self.loss_weight * torch.stack(list(terms.values())).sum()

    def extra_repr(self) -> str:
        return f'temperatures={temperature_set(self.temperature)}, views={self.views}, {super().extra_repr()}'


class CorrectedMLKDLoss(MLKDLoss):
    """MLKD with the two quirks of the authors' code corrected (module docstring): each mask selects the samples or
    classes it indexes, and the strong view's instance terms take the strong view's logits at all five
    temperatures. The same hyper-parameters as :class:`MLKDLoss`."""

    corrected = True
