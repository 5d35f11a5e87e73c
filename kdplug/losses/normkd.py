"""NormKD: Chi et al., "NormKD: Normalized Logits for Knowledge Distillation", arXiv:2308.00520.

Each sample gets its own temperature from the spread of its logits, for student and teacher separately:

    T_i^s = t_norm * std(s_i),  T_i^t = t_norm * std(t_i)           (unbiased std, no centring, no eps)
    L_NormKD = 1/N sum_i (T_i^t)^2 * KL( softmax(t_i / T_i^t) || softmax(s_i / T_i^s) )      (eq. 6-7)

Defaults: t_norm = 2.0 (CIFAR-100); ImageNet uses 1.0. The per-sample temperature is
:class:`kdplug.losses.functional.Temperature` with ``t_norm``, shared by every loss: ``DKDLoss(t_norm=2.0)`` is
NormKD+DKD (Tables 2-5). The std is floored at ``SPREAD_FLOOR`` (1e-2): a (near-)constant row is softened
at T = t_norm * 0.01 with a bounded gradient, and a constant teacher row gets the small weight (t_norm * 0.01)^2.
"""
from typing import Optional

from .kd import KDLoss


class NormKDLoss(KDLoss):
    """KD with NormKD's per-sample temperature t_norm * std(logits)."""

    def __init__(self, t_norm: float = 2.0, logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(t_norm=t_norm, logit_norm=logit_norm, loss_weight=loss_weight)
