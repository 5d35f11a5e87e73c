"""Shared pieces of every logit loss: logit pre-transforms, the temperature, KL rows and the reduction.

Conventions: logits are (N, C); every loss is computed in float32 whatever the input dtype; a loss first builds a
per-sample tensor of shape (N,), then :func:`reduce_per_sample` turns it into the scalar. Gradients flow through
the student's own statistics (mean, std, norm); the teacher arrives detached. Non-finite logits are never hidden:
a NaN or inf in a row makes that row's loss non-finite (the distiller excludes and reports such teacher rows).
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

LOGIT_NORMS = (None, 'zscore', 'l2')

# Smallest variance / squared norm treated as non-zero. Clamping before the square root keeps the gradient of
# std/norm finite for a constant row (d sqrt(v)/dv is infinite at v = 0, and 0 * inf = NaN in autograd).
_TINY = 1e-20

#: The smallest spread (std or L2 norm of a row) that z-score, L2 normalisation and NormKD's temperature divide
#: by. Dividing by a row's own spread amplifies its gradient by 1 / spread: unbounded for a (near-)constant row
#: (2e6 for an all-zero row under z-score, inf in float16). Rows spread less than this are divided by the floor
#: instead: they come out near-constant (a near-uniform softmax) with gradients at most 1 / SPREAD_FLOOR times the
#: loss's own. Trained networks' logits have a std of 1 to 10, so the floor never touches them.
SPREAD_FLOOR = 1e-2


def check_hyperparameter(name: str, value: float, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float, finite and >= ``minimum`` (> with ``strict``); a ValueError that names it otherwise."""
    try:
        if isinstance(value, bool):  # True is 1.0 to float(): a switch given where a number belongs
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a number, got {value!r}') from None
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        bound = f'> {minimum:g}' if strict else f'>= {minimum:g}'
        raise ValueError(f'{name} must be a finite number {bound}, got {value!r}')
    return number


def reads_are_cheap(x: Tensor) -> bool:
    """Whether reading a value of ``x`` back to Python costs no device synchronisation (a CPU tensor): then a loss
    may test a row statistic and skip work; on an accelerator it takes the path that needs no test."""
    return x.device.type == 'cpu'


def _std_parts(x: Tensor) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """(base, offset, std) of each row: x - mean = base - offset (offset None: base is x centred) and the unbiased
    std, (N, 1). (C - 1) var = sum x^2 - C mean^2 from two fused reductions, with no centred copy of x (z-score and
    NormKD's temperature under DKD, NKD and multi-temperature KD take a std of every row of both models; torch.var's
    Welford kernel costs three times more). Its float32 error grows with C mean^2 / ((C - 1) var): rows whose mean
    exceeds ~8 stds (and constant rows, which then come out exactly 0) are centred first instead. On an accelerator,
    where the test would synchronise, always centred."""
    classes = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    base, offset = x, mean
    squares = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()
    spread = torch.addcmul(squares, mean, mean, value=-classes)
    # sum x^2 <= 64 spread is C mean^2 <= 63 spread: the rows whose float32 sums the difference can be trusted from
    if not reads_are_cheap(x) or not bool((squares <= 64 * spread).all()):
        base, offset = x - mean, None
        spread = torch.linalg.vector_norm(base, dim=-1, keepdim=True).square_()
    return base, offset, spread.div_(classes - 1).sqrt_()


class _RowStd(torch.autograd.Function):
    """max(std, floor) of each row with its gradient in one pass: d std / dx = (x - mean) / ((C - 1) std) above the
    floor, 0 at or below it. Autograd would also differentiate the mean (a term that sums to zero), the norm, the
    zero guard and the floor separately: five passes over (N, C) instead of one, and a node per small step."""

    @staticmethod
    def forward(ctx, x: Tensor, floor: float) -> Tensor:
        base, offset, std = _std_parts(x)
        ctx.floor = floor
        ctx.save_for_backward(base, offset, std)
        return std.clamp_min(floor)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:
        base, offset, std = ctx.saved_tensors
        scale = torch.where(std > ctx.floor, grad / (std * (base.shape[-1] - 1)), 0.0)
        grad_x = base * scale
        return (grad_x if offset is None else grad_x.sub_(offset * scale)), None


def row_std(x: Tensor, floor: float = 0.0) -> Tensor:
    """Unbiased (C - 1) standard deviation of each row, (N, 1), or ``floor`` where it is smaller (then with gradient
    0); exactly 0 for a constant row, finite gradient."""
    if x.shape[-1] < 2:
        raise ValueError(f'a per-sample std needs at least 2 classes, got logits of shape {tuple(x.shape)}')
    if x.shape[0] == 0:
        return x.new_zeros(0, 1)
    if not (x.requires_grad and torch.is_grad_enabled()):  # the teacher's: no node to build
        return _std_parts(x)[2].clamp_min_(floor)
    return _RowStd.apply(x, floor)


def soften_by_spread(x: Tensor, t_norm: float) -> Tuple[Tensor, Tensor, Tensor]:
    """NormKD's softening of each row: ((x - mean) / T, T, std), (N, C), (N, 1), (N, 1), with the unbiased std and
    T = t_norm * max(std, SPREAD_FLOOR). Centred, which a softmax ignores, because then one layer norm computes the
    mean, the std and the scaled row in one pass (its weight sqrt((C - 1) / C) / t_norm turns the biased std into
    t_norm times the unbiased one): a mean, a norm and a division took three. Rows spread less than the floor are
    rescaled to (x - mean) / (t_norm * SPREAD_FLOOR) (a constant row comes out all zeros); on a CPU only when a row
    needs it. No gradient: the callers write theirs out."""
    classes = x.shape[-1]
    weight = x.new_full((classes,), math.sqrt((classes - 1) / classes) / t_norm)
    with torch.no_grad():  # eps _TINY: a constant row gives 0, not 0 * inf; any std above 1e-6 is unchanged by it
        scaled, _, inverse_std = torch.native_layer_norm(x, (classes,), weight, None, _TINY)
    std = inverse_std.reciprocal_().mul_(math.sqrt(classes / (classes - 1)))
    below = std <= SPREAD_FLOOR
    if not reads_are_cheap(x) or bool(below.any()):
        scaled = scaled.mul_(torch.where(below, std / SPREAD_FLOOR, 1.0))
    return scaled, t_norm * std.clamp_min(SPREAD_FLOOR), std


def zscore(x: Tensor, eps: float = 1e-7) -> Tensor:
    """Logit standardization (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024,
    arXiv:2403.01427): (x - mean) / (std + eps), unbiased std, eps on the std.

    The std is floored at :data:`SPREAD_FLOOR`: a constant row becomes all zeros (a uniform softmax), a row with
    std below the floor comes out with std std / SPREAD_FLOOR < 1 instead of 1 (bounded gradient).
    """
    return (x - x.mean(dim=-1, keepdim=True)) / (row_std(x, SPREAD_FLOOR) + eps)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """L2-normalised logits (the appendix of the ICCE paper on generalised zero-shot learning): x / (||x||_2 + eps).

    The norm is floored at :data:`SPREAD_FLOOR`: an all-zero row stays all zeros (a uniform softmax), a row of
    norm below the floor is divided by the floor (norm < 1 out, bounded gradient).
    """
    sq = x.pow(2).sum(dim=-1, keepdim=True)
    norm = torch.where(sq > _TINY, sq.clamp_min(_TINY).sqrt(), torch.zeros_like(sq))
    return x / (norm.clamp_min(SPREAD_FLOOR) + eps)


def apply_logit_norm(x: Tensor, logit_norm: Optional[str]) -> Tensor:
    """The pre-transform every loss accepts: None, 'zscore' (logit standardization) or 'l2'."""
    if logit_norm is None:
        return x
    if logit_norm == 'zscore':
        return zscore(x)
    if logit_norm == 'l2':
        return l2_normalize(x)
    raise ValueError(f'logit_norm={logit_norm!r} is not one of {LOGIT_NORMS}')


def descending_order(score: Tensor) -> Tensor:
    """The column indices of each row of ``score`` (N, C) from its highest value to its lowest, ties to the lower
    index: ``score.argsort(dim=-1, descending=True, stable=True)``, int64.

    On a CPU torch sorts with a scalar comparison sort, three times slower than this (``tools/benchmark.py losses``
    prints both; USKD ranks all C classes of every sample, and the sort was most of its time): each float32 value
    becomes an int64 key, its order bits above its column index, and numpy's vectorised sort orders the keys, whose
    order is the stable descending order.
    This is the one use of numpy in a loss; torch imports it already. A NaN anywhere (its bit patterns would order
    NaNs apart) leaves the sort to torch."""
    if not reads_are_cheap(score) or score.dtype != torch.float32 or bool(score.sum().isnan()):
        return score.argsort(dim=-1, descending=True, stable=True)
    with torch.no_grad():  # 0 - x: descending x is ascending -x, and -0.0 becomes +0.0, which torch ties with it
        bits = (0.0 - score).view(torch.int32)
        # the keys are built by torch (its element-wise passes use every core), sorted in place by numpy
        keys = (bits >> 31).bitwise_and_(0x7FFFFFFF).bitwise_xor_(bits)  # negative floats: magnitude bits flipped
        keys = keys.to(torch.int64).bitwise_left_shift_(32).bitwise_or_(torch.arange(score.shape[-1]))
    keys.numpy().sort(axis=-1)
    return keys.bitwise_and_(0xFFFFFFFF)


#: The smallest probability whose logarithm, or whose share of a sum, one float32 softmax gives to float32 precision
#: (:func:`softmax_parts`, USKD's kept classes); below it a loss takes log-softmaxes, as exact and slower.
PROBABILITY_FLOOR = 1e-20


def softmax_parts(x: Tensor, columns: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """softmax(x) (N, C), its values and logarithms at ``columns`` (N, K) and each row's log-sum-exp (N, 1), from
    one softmax: log p at a column is the log of its probability, and logsumexp(x) = x_l - log p_l at the first.
    Where a column's probability is below PROBABILITY_FLOOR (its logarithm would lose digits, or be -inf) or cannot
    be read back without a device synchronisation, the logarithms come from a log-softmax instead."""
    p = torch.softmax(x, dim=-1)
    at = p.gather(1, columns)
    if reads_are_cheap(x) and bool((at >= PROBABILITY_FLOOR).all()):  # False for NaN: the log-softmax's result
        log_at = at.log()
    else:
        log_at = torch.log_softmax(x, dim=-1).gather(1, columns)
    return p, at, log_at, x.gather(1, columns[:, :1]) - log_at[:, :1]


#: The logit that leaves a class out of a softmax (DKD's and NKD's target column of their non-target softmax): its
#: probability is exactly 0 (exp underflows) at any temperature, and unlike -inf it keeps every product finite
#: (0 * -inf is NaN), so a hand-written gradient needs no mask.
EXCLUDED_LOGIT = -1e30

TemperatureSpec = Union[float, Sequence[float]]


class Temperature:
    """The temperature of every loss of kdplug, fixed or per sample (NormKD).

    * fixed: ``Temperature(4.0)`` gives T = 4 for every sample;
    * NormKD (Chi et al., "NormKD: Normalized Logits for Knowledge Distillation", arXiv:2308.00520, eq. 6-7):
      ``Temperature(t_norm=2.0)`` gives each sample of each model its own
      T_i = t_norm * std(x_i) (unbiased std, no centring, no eps);
    * a set of temperatures (multi-temperature KD, NormKD's section 3.2): ``Temperature([1, 2, 4])``; with ``t_norm``
      each temperature of the set is multiplied by the per-sample t_norm * std(x_i).

    ``__call__`` returns the temperatures of a batch, (N, K) with K the size of the set (1 for a single value). The
    loss weight that compensates the softening is the square of the teacher's largest temperature per sample
    (T^2 in KD, (t_norm * std_t)^2 in NormKD, max(T)^2 in multi-temperature KD): :meth:`compensation`.

    (Near-)constant logits: the std is floored at :data:`SPREAD_FLOOR`, so T_i >= t_norm * SPREAD_FLOOR. A
    constant row has the uniform softmax at any temperature; its gradient stays bounded, and a constant teacher row
    (no dark knowledge) gets the small weight (t_norm * SPREAD_FLOOR)^2, the limit of the paper's T_t^2 as std -> 0.
    """

    def __init__(self, temperature: Optional[TemperatureSpec] = None, t_norm: Optional[float] = None,
                 default: TemperatureSpec = 1.0) -> None:
        if t_norm is not None and temperature is not None and not isinstance(temperature, (list, tuple)):
            raise ValueError(
                f'give either temperature={temperature} (a fixed temperature) or t_norm={t_norm} (NormKD\'s '
                'per-sample temperature t_norm * std(logits)), not both')
        if temperature is None:  # with t_norm the per-sample std is the temperature: no fixed factor on top
            temperature = 1.0 if t_norm is not None else default
        values = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature]
        if not values:
            raise ValueError('temperatures must not be empty: give at least one, e.g. [1, 2, 4]')
        self.values = tuple(check_hyperparameter('temperature', v, strict=True) for v in values)
        self.t_norm = None if t_norm is None else check_hyperparameter('t_norm', t_norm, strict=True)

    @property
    def spread_only(self) -> bool:
        """NormKD's temperature: t_norm times each row's floored std, with no fixed factor."""
        return self.t_norm is not None and self.values == (1.0,)

    def __call__(self, logits: Tensor) -> Tensor:
        if self.spread_only:
            return self.t_norm * row_std(logits, SPREAD_FLOOR)
        base = logits.new_tensor(self.values).unsqueeze(0)  # (1, K)
        if self.t_norm is None:
            return base.expand(logits.shape[0], -1)
        return self.t_norm * row_std(logits, SPREAD_FLOOR) * base  # (N, K)

    def soften(self, logits: Tensor) -> Tuple[Tensor, Tensor]:
        """(logits / T, T) for a single temperature, (N, C) and (N, 1); NormKD's logits come centred
        (:func:`soften_by_spread`: the same softmax). No gradient: for the teacher's logits."""
        if len(self.values) != 1:
            raise ValueError(f'soften takes a single temperature, this one has {len(self.values)}: {self}')
        if self.spread_only and logits.dim() == 2 and logits.shape[0] > 0 and logits.shape[-1] > 1:
            return soften_by_spread(logits, self.t_norm)[:2]
        temperature = self(logits)
        return logits / temperature, temperature

    def compensation(self, teacher_temperature: Tensor) -> Tensor:
        """Per-sample weight (N,): the square of the teacher's largest temperature."""
        return teacher_temperature.amax(dim=-1).pow(2)

    def __repr__(self) -> str:
        values = self.values[0] if len(self.values) == 1 else list(self.values)
        return f'Temperature({values}, t_norm={self.t_norm})' if self.t_norm else f'Temperature({values})'


def one_temperature(temperature: Optional[float], t_norm: Optional[float], default: float, method: str
                    ) -> Temperature:
    """The :class:`Temperature` of a loss that softens at one temperature (KD, DKD, NKD); a set of temperatures is
    refused with the loss that takes one."""
    if isinstance(temperature, (list, tuple)):
        raise ValueError(f'{method} softens at one temperature, got temperature={list(temperature)}: a set of '
                         f'temperatures is multi-temperature KD, MultiTempKDLoss(temperatures={list(temperature)})')
    return Temperature(temperature, t_norm, default=default)


def sum_kl_terms(terms: Tensor, p_teacher: Tensor) -> Tuple[Tensor, Tensor, bool]:
    """The KL of each row from its terms p_teacher * (log p_teacher - log p_student), (N, C): (row sums, the terms,
    whether they were masked), the 0 log 0 terms (0 * -inf, a NaN) of classes where p_teacher is 0 counted as 0.
    A comparison and a select over (N, C) cost a third of KD on a CPU, a test of the N row sums next to nothing: on
    a CPU the zeros are masked only when a row needs it. On an accelerator the select is cheap and reading the test
    would synchronise with the device: there it always masks."""
    if reads_are_cheap(terms):
        sums = terms.sum(dim=-1)
        if not bool(sums.isnan().any()):
            return sums, terms, False
    terms = torch.where(p_teacher == 0, torch.zeros_like(terms), terms)
    return terms.sum(dim=-1), terms, True


def kl_rows(log_p_teacher: Tensor, log_p_student: Tensor) -> Tensor:
    """KL(p_teacher || p_student) of each row, (N,); classes where p_teacher is 0 contribute exactly 0.

    The difference of log-probabilities is taken first: near-identical distributions (small logits, high T) would
    otherwise lose the KL to cancellation between two large sums in float32. Only exact zeros are masked (0 log 0):
    a NaN teacher probability stays NaN, so a broken teacher shows in the value instead of hiding in the gradient.
    The backward of the product is -p_teacher * grad whether masked or not: exactly 0 where p_teacher is 0.
    """
    p_teacher = log_p_teacher.exp()
    return sum_kl_terms(p_teacher * (log_p_teacher - log_p_student), p_teacher)[0]


class _SoftenedKL(torch.autograd.Function):
    """KL(softmax(t / T_t) || softmax(s / T_s)) per row with its gradients written out, p and q the two softmaxes:

        d KL / d s   = (q - p) / T_s
        d KL / d T_s = -sum_j (d KL / d s_j) * s_j / T_s                      (per row)
        d KL / d T_t = -sum_j p_j (log p_j - log q_j - KL) * t_j / T_t ** 2      (per row: CTKD's learned T)

    The teacher comes divided by its temperature (t / T_t) and takes no gradient. With ``t_norm`` (NormKD) the
    student's T_s = t_norm * max(std(s), SPREAD_FLOOR) is formed here (:func:`soften_by_spread`, s centred) and its
    gradient added to the student's: above the floor, d T_s / d s = t_norm * (s - mean) / ((C - 1) std), so the
    student's gradient gains t_norm^2 / (C - 1) * (d KL / d T_s) * (s - mean) / T_s. Autograd would go through the
    product, the difference, both log-softmaxes and both divisions: about twice the passes over (N, C)."""

    @staticmethod
    def forward(ctx, student: Tensor, t_student: Optional[Tensor], scaled_teacher: Tensor, t_teacher: Tensor,
                t_norm: Optional[float]) -> Tensor:
        ctx.t_norm = t_norm
        std = None
        if t_norm is not None:
            scaled_student, t_student, std = soften_by_spread(student, t_norm)
        else:
            scaled_student = student / t_student
        log_q, log_p = torch.log_softmax(scaled_student, dim=-1), torch.log_softmax(scaled_teacher, dim=-1)
        p = log_p.exp()
        kl, terms, ctx.masked = sum_kl_terms(p * (log_p - log_q), p)
        teacher_dot = None
        if ctx.needs_input_grad[3]:  # sum_j (terms_j - p_j KL) t_j / T_t, while the terms are fresh in the cache
            if ctx.masked:  # a class ruled out (logit -inf) has p = 0 and term 0: 0 * -inf would be NaN
                scaled_teacher = scaled_teacher.masked_fill(p == 0, 0.0)
            teacher_dot = torch.linalg.vecdot(terms.addcmul_(p, kl.unsqueeze(-1), value=-1.0), scaled_teacher)
        student_side = ctx.needs_input_grad[1] or (t_norm is not None and ctx.needs_input_grad[0])
        ctx.save_for_backward(log_q, p, scaled_student if student_side else None, t_student, t_teacher, teacher_dot,
                              std)
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], None, Optional[Tensor], None]:
        log_q, p, scaled_student, t_student, t_teacher, teacher_dot, std = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_student = grad_t_student = grad_t_teacher = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_student = log_q.exp().sub_(p).mul_(grad / t_student)
            if scaled_student is not None:
                grad_t_student = -torch.linalg.vecdot(grad_student, scaled_student).unsqueeze(-1)
            if ctx.t_norm is not None:  # (s - mean) / T_s is the scaled student; 0 below the floor
                through_std = ctx.t_norm ** 2 / (grad_student.shape[-1] - 1) * grad_t_student
                grad_student.addcmul_(scaled_student, torch.where(std > SPREAD_FLOOR, through_std, 0.0))
                grad_t_student = None
        if ctx.needs_input_grad[3]:
            grad_t_teacher = -teacher_dot.unsqueeze(-1) * (grad / t_teacher)
        return grad_student if ctx.needs_input_grad[0] else None, grad_t_student, None, grad_t_teacher, None


def softened_kl_rows(student_logits: Tensor, t_student: Union[Tensor, Temperature], scaled_teacher: Tensor,
                     t_teacher: Tensor) -> Tensor:
    """KL(softmax(scaled_teacher) || softmax(student / t_student)) of each row, (N,), as :func:`kl_rows` of the two
    log-softmaxes. ``scaled_teacher``: the teacher's logits divided by ``t_teacher`` (:meth:`Temperature.soften`),
    detached; the temperatures (N, 1) are fixed, NormKD's or CTKD's: the gradients of the student's logits and of
    each temperature are formed in one pass each (:class:`_SoftenedKL`). ``t_student`` is the student's
    temperatures, or the :class:`Temperature` that gives them (NormKD's is then formed with the KL)."""
    scaled_teacher = scaled_teacher.detach()
    rows = (student_logits.shape[0], 1)
    fused = student_logits.dim() == 2 and student_logits.shape == scaled_teacher.shape and t_teacher.shape == rows
    if isinstance(t_student, Temperature):
        if fused and t_student.spread_only and rows[0] > 0 and student_logits.shape[-1] > 1:
            # NormKD: the student's temperature formed with the KL
            return _SoftenedKL.apply(student_logits, None, scaled_teacher, t_teacher, t_student.t_norm)
        t_student = t_student(student_logits)
    if not fused or t_student.shape != rows:
        return kl_rows(torch.log_softmax(scaled_teacher, dim=-1), torch.log_softmax(student_logits / t_student, dim=-1))
    return _SoftenedKL.apply(student_logits, t_student, scaled_teacher, t_teacher, None)


def hard_labels(target: Optional[Tensor], num_samples: int, num_classes: int, method: str,
                soft_ok: bool) -> Tensor:
    """Class indices (N,) from hard labels (N,) or, where the method allows it, soft labels (N, C) by argmax."""
    if target is None:
        raise ValueError(f'{method} needs the ground-truth labels: call it as loss(student_logits, '
                         'teacher_logits, target)')
    if target.dim() == 2:
        if not soft_ok:
            raise ValueError(f'{method} needs hard labels (N,) to split target and non-target classes; got soft '
                             f'labels of shape {tuple(target.shape)}. Turn off mixup/cutmix or use a loss that '
                             'accepts soft labels (KD, NormKD, multi-temperature KD, NKD)')
        if target.shape != (num_samples, num_classes):
            raise ValueError(f'soft labels of shape {tuple(target.shape)} do not match logits '
                             f'({num_samples}, {num_classes})')
        return target.argmax(dim=-1)
    if target.shape != (num_samples,):
        raise ValueError(f'labels of shape {tuple(target.shape)} do not match {num_samples} samples')
    if target.is_floating_point() and num_samples and not torch.equal(target, target.round()):
        raise ValueError(f'{method}: labels must be class indices; got non-integer values such as '
                         f'{target[target != target.round()][0].item()!r}. Pass integer labels (N,), or soft labels '
                         '(N, C) where the method accepts them')
    target = target.long()
    if num_samples and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes}), got [{int(target.min())}, {int(target.max())}]')
    return target


def check_class_count(logits: Tensor) -> None:
    """Refuse logits of fewer than 2 classes: a softmax over one class is 1 whatever its logit, so every loss would
    be a silent 0 (and over none, undefined)."""
    if logits.shape[-1] < 2:
        raise ValueError(f'logits of shape {tuple(logits.shape)}: distillation needs at least 2 classes (a softmax '
                         'over one class is 1 whatever the logits, so the loss would be 0): check num_classes of the '
                         'heads')


def check_logits(student_logits: Tensor, teacher_logits: Tensor) -> Tuple[Tensor, Tensor]:
    """Both as float32 (N, C), the teacher detached; a clear error for mismatched shapes or fewer than 2 classes."""
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f'student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must '
            'both be (N, C) with the same number of classes: check num_classes of the two heads')
    check_class_count(student_logits)
    return student_logits.float(), teacher_logits.detach().float()


def valid_row_weights(weight: Tensor, rows: int) -> Tensor:
    """``weight`` if it is one weight per row, (rows,), finite and >= 0 (0 leaves a row out); a ValueError otherwise.
    An (N, 1) or (1,) weight would broadcast into another loss, a negative one reward it. The values are tested on a
    CPU only: on an accelerator the test would synchronise every step (kdplug's tasks give weights in [0, 1])."""
    if weight.shape != (rows,):
        raise ValueError(f'weight of shape {tuple(weight.shape)}: the row weights must be one per row, ({rows},)')
    if reads_are_cheap(weight) and not bool(((weight >= 0) & weight.isfinite()).all()):
        raise ValueError(f'row weights must be finite and >= 0 (0 leaves a row out), got {weight.min().item()} .. '
                         f'{weight.max().item()}')
    return weight


def reduce_per_sample(per_sample: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """The one reduction of kdplug: the (weighted) mean over samples of a per-sample loss (N,).

    With ``weight`` (N,) (:func:`valid_row_weights`), the result is sum(w * loss) / sum(w). An empty batch, or all
    weights 0, gives 0 that still belongs to the graph (documented: nothing to distil contributes nothing), never NaN.
    """
    if per_sample.dim() != 1:
        raise ValueError(f'expected a per-sample loss of shape (N,), got {tuple(per_sample.shape)}')
    if weight is None:
        return per_sample.sum() / max(per_sample.numel(), 1)
    weight = valid_row_weights(weight, per_sample.shape[0]).to(per_sample)
    return (weight * per_sample).sum() / weight.sum().clamp_min(1e-12)
