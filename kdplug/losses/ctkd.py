"""CTKD: Li, Li, Yang, Zhao, Song, Luo, Li and Yang, "Curriculum Temperature for Knowledge Distillation", AAAI 2023,
arXiv:2211.16231.

KD at a temperature that is learned with the student, adversarially, through a gradient reversal layer (GRL) whose
strength lambda follows an easy-to-hard curriculum over the epochs:

    T = t_start + t_range * sigmoid(GRL_lambda(T_pred))            (global: one T; instance-wise: one T_i per sample)
    L_CTKD = 1/N sum_i T_i^2 * KL( softmax(t_i / T_i) || softmax(s_i / T_i) )
    lambda_n = lambda_min + 1/2 (lambda_max - lambda_min) (1 + cos((1 + min(n, E) / E) pi))      (paper's eq. 11)

with n the epoch counted from 1 and E the curriculum's length in epochs (10 of 240 on CIFAR, 5 of 120 on
ImageNet). The student minimises L_CTKD; the temperature gets -lambda times its gradient, so it moves to raise the
loss, more and more as lambda grows from 0 to 1. The temperature is
:class:`~kdplug.losses.functional.LearnableTemperature`, a submodule of the loss: the distiller's optimizer trains
it, its checkpoints hold it. ``kdplug.CTKDCurriculumHook`` sets lambda before every training iteration from the
runner's epoch.

What kdplug follows, file by file (zhengli97/CTKD at commit 7d52522):

* the KD at the learned T: ``distiller_zoo/KD.py`` lines 13-18,
  ``KLDivLoss(reduction='batchmean')(log_softmax(s / T), softmax(t / T)) * T * T``, the same T for student and
  teacher; for the instance-wise T, the README's section "Instance-wise Temperature": the mean over the samples of
  T_i^2 KL_i;
* the temperature, the GRL and how T is formed: see :class:`~kdplug.losses.functional.LearnableTemperature`
  (``models/temp_global.py`` lines 9-40, ``helper/loops.py`` lines 132-134);
* the curriculum: ``train_student.py`` lines 186-202 (``CosineDecay.get_value``: the step clamped to [0, E], then
  (cos(n pi / E) + 1) / 2 scaled between the bounds), called with the epoch counted from 1 (lines 409-419), with
  ``--decay_max 0 --decay_min -1 --decay_loops 10`` (``scripts/run_cifar_distill.sh`` lines 17-22): their value,
  -lambda_n, multiplies the gradient. :func:`cosine_curriculum` is the paper's eq. 11: the same numbers
  (lambda_1 = 0.0245, lambda_5 = 0.5, lambda_n = 1 from n = 10 on).

With ``logit_norm='zscore'`` this is CTKD + logit standardization (Sun et al., "Logit Standardization in Knowledge
Distillation", CVPR 2024, arXiv:2403.01427). Their CTKD variant (sunshangquan/logit-standardization-KD at commit
f6e5aa5, ``CTKD/distiller_zoo/KD.py`` lines 7-10 and 31-36) computes the same loss on z-scored logits
((x - mean) / (1e-7 + std), unbiased std): the learned T takes the role of the base temperature, T^2 is kept. Their
script's ``--kd_T 2`` (the base temperature in their log names) is not read when the temperature is learned
(``CTKD/helper/loops.py`` lines 132-137), yet in all 14 of their CTKD logs the learned T stays above 2.001: the runs
behind their table had T >= 2. kdplug's CTKD+LS configs therefore set ``t_start=2`` (configs/ctkd/README.md).

Two deliberate differences: the instance-wise KL is exact (the README's snippet adds 1e-7 to the teacher's
probabilities), and the instance-wise MLP sees detached inputs (its code is not published; see the temperature).
Defaults: t_start = 1, t_range = 20 (T in (1, 21)), global temperature.
"""
import math
from typing import Optional

from torch import Tensor

from .base import LogitLoss
from .functional import LearnableTemperature, check_hyperparameter, softened_kl_rows

MODES = ('global', 'instance')


def kd_at_temperature(student_logits: Tensor, teacher_logits: Tensor, temperature: LearnableTemperature) -> Tensor:
    """T_i^2 * KL(softmax(t_i / T_i) || softmax(s_i / T_i)) per sample, (N,), at the learned temperatures."""
    t = temperature(student_logits, teacher_logits)  # (N, 1), shared by the two models
    kl = softened_kl_rows(student_logits, t, teacher_logits.detach() / t.detach(), t)
    return kl * temperature.compensation(t)


def cosine_curriculum(step: float, lambda_min: float = 0.0, lambda_max: float = 1.0, loops: float = 10.0) -> float:
    """CTKD's lambda at ``step`` (the epoch counted from 1; the authors' ``CosineDecay.get_value``): lambda_min at
    step 0, lambda_max from step ``loops`` on, a half cosine in between (eq. 11 of the paper)."""
    n = min(max(float(step), 0.0), float(loops))
    return lambda_min + 0.5 * (lambda_max - lambda_min) * (1.0 + math.cos((1.0 + n / loops) * math.pi))


class CTKDLoss(LogitLoss):
    """KD at a learned, adversarial temperature; ``CTKDLoss(logit_norm='zscore', t_start=2.0)`` is CTKD+LS.

    ``mode='global'`` learns one temperature; ``mode='instance'`` predicts one per sample and needs ``num_classes``
    (the MLP's input is the 2 * num_classes probabilities of teacher and student). Add ``kdplug.CTKDCurriculumHook``
    to the run: the distiller refuses to train without it (lambda would stay 0: plain KD at the initial
    temperature, which weight decay alone moves).
    """

    def __init__(self, t_start: float = 1.0, t_range: float = 20.0, mode: str = 'global',
                 num_classes: Optional[int] = None, hidden_channels: int = 256, logit_norm: Optional[str] = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight=loss_weight, logit_norm=logit_norm)
        if mode not in MODES:
            raise ValueError(f'mode={mode!r} is not one of {MODES}: one learned temperature, or one per sample')
        if mode == 'instance' and num_classes is None:
            raise ValueError("mode='instance' predicts each sample's temperature from the two models' class "
                             'probabilities: give num_classes (e.g. num_classes=100 for CIFAR-100)')
        if mode == 'global' and num_classes is not None:
            raise ValueError(f"num_classes={num_classes} is for mode='instance' only; the global temperature is "
                             'one parameter')
        check_hyperparameter('t_start', t_start, strict=True)
        self.temperature = LearnableTemperature(t_start, t_range, num_classes, hidden_channels)

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]) -> Tensor:
        return kd_at_temperature(student_logits, teacher_logits, self.temperature)
