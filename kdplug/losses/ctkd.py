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
:class:`LearnableTemperature`, a submodule of the loss: the distiller's optimizer trains
it, its checkpoints hold it. ``kdplug.CTKDCurriculumHook`` sets lambda before every training iteration from the
runner's epoch.

What kdplug follows, file by file (zhengli97/CTKD at commit 7d52522):

* the KD at the learned T: ``distiller_zoo/KD.py`` lines 13-18,
  ``KLDivLoss(reduction='batchmean')(log_softmax(s / T), softmax(t / T)) * T * T``, the same T for student and
  teacher; for the instance-wise T, the README's section "Instance-wise Temperature": the mean over the samples of
  T_i^2 KL_i;
* the temperature, the GRL and how T is formed: see :class:`LearnableTemperature`
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
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import LogitLoss
from .functional import Temperature, check_hyperparameter, softened_kl_rows

MODES = ('global', 'instance')


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-strength`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:
        return grad * -ctx.strength, None


def reverse_gradient(x: Tensor, strength: float) -> Tensor:
    """The gradient reversal layer (Ganin and Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
    ICML 2015, arXiv:1409.7495): ``x`` unchanged forward, the incoming gradient multiplied by ``-strength``
    backward. ``strength`` is CTKD's lambda (0 stops the gradient, 1 reverses it fully)."""
    return _GradientReversal.apply(x, float(strength))


class LearnableTemperature(nn.Module, Temperature):
    """The temperature learned by CTKD: a :class:`Temperature` whose value is trained, adversarially, with the
    student (Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023, arXiv:2211.16231).

    One temperature per batch (global) or per sample (instance-wise), shared by student and teacher::

        T = t_start + t_range * sigmoid(GRL(T_pred)),     T in (t_start, t_start + t_range)

    * global: ``T_pred`` is one parameter, initialised to 1 (T = 1 + 20 sigmoid(1) = 15.62 with the defaults);
    * instance-wise (``num_classes`` given): ``T_pred_i = MLP([softmax(t_i), softmax(s_i)])``, a two-layer MLP
      (Linear(2C, hidden), ReLU, Linear(hidden, 1)) on the concatenated class probabilities of teacher and
      student, whose inputs are detached: the student learns only through the distillation at the predicted T.
    * GRL: :func:`reverse_gradient` with strength ``grl_lambda`` (the curriculum's lambda, set each epoch by
      ``kdplug.CTKDCurriculumHook``; 0 until set, which leaves the temperature untrained). The student minimises
      the loss; the temperature receives ``-lambda`` times its gradient, so the optimiser step raises the loss.

    Called as ``temperature(student_logits, teacher_logits)``, not with one model's logits as the fixed
    temperature: it returns the (N, 1) temperatures of the batch, the same for both models. The loss weight is
    :meth:`Temperature.compensation`, T^2 per sample. ``values`` holds ``t_start``, the lower bound. The
    parameters belong to the loss module, so a distiller's optimizer trains them with the student's (weight
    decay included, as in the authors' code) and its checkpoints hold them.

    What the authors' code does (zhengli97/CTKD at commit 7d52522, the file and its lines):

    * ``models/temp_global.py`` lines 9-17: ``global_T = nn.Parameter(torch.ones(1))``, returned through the GRL;
      lines 21-40: the GRL's forward is ``x.clone()``, its backward multiplies the gradient by ``lambda_``;
    * ``helper/loops.py`` lines 132-134: ``temp = t_start + t_end * sigmoid(mlp_net(logit_t, logit_s, lambda))``
      (``train_student.py`` lines 89-90: ``t_start = 1``, ``t_end = 20``; kdplug calls the second ``t_range``, as
      it is the width of the range, not its end);
    * ``train_student.py`` lines 186-202 and 418-419: their lambda runs from 0 down to -1 (``--decay_max 0
      --decay_min -1``) and multiplies the gradient; kdplug's runs from 0 up to 1 and multiplies by ``-lambda``,
      as the paper writes it: the same gradient.
    * The instance-wise module is not in the repository (its README points to a Drive archive); kdplug follows the
      paper's Fig. 2(b) and the authors' project page (an MLP on the concatenated teacher and student
      predictions, one temperature per sample). The hidden width (256 by default) is kdplug's choice.
    """

    #: The hook that drives it (it sets ``scheduled``), and what a run without that hook would train: the words of
    #: the distiller's refusal (any loss part that a hook must drive says the same two things).
    SCHEDULE_HOOK = 'kdplug.CTKDCurriculumHook'
    UNSCHEDULED = ('its adversarial strength lambda would stay 0: plain KD at the initial temperature, which weight '
                   'decay alone moves')

    def __init__(self, t_start: float = 1.0, t_range: float = 20.0, num_classes: Optional[int] = None,
                 hidden_channels: int = 256) -> None:
        nn.Module.__init__(self)
        Temperature.__init__(self, t_start)
        self.t_range = check_hyperparameter('t_range', t_range)
        self.grl_lambda = 0.0
        # set by the curriculum that drives grl_lambda (the hook named by SCHEDULE_HOOK): a distiller refuses to
        # train a module whose ``scheduled`` stays False, with its UNSCHEDULED words
        self.scheduled = False
        self.last_temperature: Optional[Tensor] = None  # the mean T of the last batch, detached (for logging)
        if num_classes is None:
            if hidden_channels != 256:  # the default: the global temperature has no hidden layer to size
                raise ValueError(f'hidden_channels={hidden_channels!r} sizes the instance-wise temperature\'s MLP '
                                 "(CTKDLoss(mode='instance', num_classes=...)); the global temperature has none: "
                                 'leave hidden_channels out')
            self.global_t = nn.Parameter(torch.ones(1))
            self.mlp = None
            return
        for name, value, minimum in (('num_classes', num_classes, 2), ('hidden_channels', hidden_channels, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
        self.global_t = None
        self.mlp = nn.Sequential(nn.Linear(2 * num_classes, hidden_channels), nn.ReLU(),
                                 nn.Linear(hidden_channels, 1))

    @property
    def t_start(self) -> float:
        return self.values[0]

    @property
    def per_sample(self) -> bool:
        return self.mlp is not None

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """The temperatures of the batch, (N, 1), float32, through the gradient reversal."""
        if self.mlp is None:  # one value, repeated over the rows
            t_pred = self.global_t.float().view(1, 1)
            # the gradient reversal as arithmetic: fixed + (t_pred - fixed) * -lambda is exactly t_pred, and its
            # gradient is -lambda; three built-in nodes cost less than a Python autograd Function each way
            fixed = t_pred.detach()
            temperature = self.t_start + self.t_range * torch.sigmoid(fixed + (t_pred - fixed) * -self.grl_lambda)
            self.last_temperature = temperature.detach()[0, 0]
            return temperature.expand(student_logits.shape[0], 1)
        in_features = self.mlp[0].in_features
        if 2 * student_logits.shape[-1] != in_features:
            raise ValueError(f'the instance-wise temperature was built for num_classes={in_features // 2}, '
                             f'got logits of shape {tuple(student_logits.shape)}')
        probs = torch.cat([teacher_logits.detach().float().softmax(dim=-1),
                           student_logits.detach().float().softmax(dim=-1)], dim=-1)
        with torch.autocast(device_type=probs.device.type, enabled=False):  # float32 under AMP too
            raw = self.mlp(probs.to(self.mlp[0].weight.dtype)).float()
        raw = reverse_gradient(raw, self.grl_lambda)
        temperature = self.t_start + self.t_range * torch.sigmoid(raw)
        self.last_temperature = temperature.detach().mean() if temperature.numel() else None
        return temperature

    def compensation(self, teacher_temperature: Tensor) -> Tensor:
        """T^2 per sample, (N,): one temperature per sample, so no maximum to take (and differentiate)."""
        return teacher_temperature.squeeze(-1).square()

    def extra_repr(self) -> str:
        mode = 'global' if self.mlp is None else 'instance-wise'
        return f'{mode}, t_start={self.t_start}, t_range={self.t_range}, grl_lambda={self.grl_lambda}'


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
