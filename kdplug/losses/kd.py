"""KD: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015).

    L_KD = 1/N sum_i T^2 * KL( softmax(t_i / T) || softmax(s_i / T) )

The per-sample weight T^2 compensates the 1/T^2 shrinking of the gradients. With ``t_norm`` the temperature is
NormKD's per-sample one (see :class:`kdplug.losses.NormKDLoss`); with ``logit_norm='zscore'`` it is KD+LS (logit
standardization, base temperature = ``temperature``), with ``logit_norm='l2'`` KD on L2-normalised logits (tau=1).
Defaults: T = 4 (CIFAR-100 recipes); ImageNet recipes use T = 1.
"""
from typing import Optional

from torch import Tensor

from .base import LogitLoss
from .functional import Temperature, one_temperature, softened_kl_rows


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: Temperature) -> Tensor:
    """T_t^2 * KL(softmax(t / T_t) || softmax(s / T_s)) per sample, (N,)."""
    scaled_teacher, t_teacher = temperature.soften(teacher_logits.detach())
    kl = softened_kl_rows(student_logits, temperature, scaled_teacher, t_teacher)
    return kl * temperature.compensation(t_teacher)


class KDLoss(LogitLoss):
    """Hinton's KD; ``KDLoss(temperature=2.0, logit_norm='zscore')`` is KD+LS."""

    default_temperature = 4.0

    def __init__(self, temperature: Optional[float] = None, t_norm: Optional[float] = None,
                 logit_norm: Optional[str] = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        self.temperature = one_temperature(temperature, t_norm, self.default_temperature, type(self).__name__)

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        return kd_per_sample(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f'{self.temperature}, {super().extra_repr()}'
