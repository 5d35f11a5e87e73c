"""The letKD loss (Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide", BMVC 2023,
arXiv:2309.02843; supplement Alg. 1-2), the **teacher side** of a :class:`kdplug.letkd.layer.LetKDLayer`.

A loss of the distiller (not part of the student, never exported): the teacher's soft assignment ``p_T`` of each
spatial feature of the teacher at the layer's stage, and ``KL(p_T || p_S)`` summed over the K assignments and
averaged over every spatial position of the batch (``batchmean`` with a row per position), times ``loss_weight``.
One loss per level of the paper, each its own class (:class:`LetKDLoss` is their common part):

* :class:`LetKDPenultimateLoss` (letKD-1, Alg. 1): ``p_T = softmax(-||f - rho_k||^2 / T)`` over the K k-means
  codewords ``rho`` of the teacher's features. The pseudo-code writes ``softmax(d)`` with ``d`` the squared
  distances; a soft assignment must favour the NEAREST codeword, so kdplug uses ``softmax(-d)`` (the sign is a typo
  of the pseudo-code; the authors' code, adagorgun/letKD-framework at commit 4fb2289, has ``softmax(-T * distances)``:
  ``distillation/architectures/miscellaneous/vector_quantization.py`` line 102, with T = 1 in every config).
  ``T`` (``temperature``) is 1 in the paper.
* :class:`LetKDIntermediateLoss` (letKD-2 adds it at a middle stage, Alg. 2): the teacher feature is projected by
  LDA (``W f + b``), the position is given the nearest sub-class prototype **of its image's class** (``k*``,
  :func:`kdplug.letkd.codewords.assign_subclasses`), and ``p_T`` is the row ``k*`` of the sub-class score matrix
  ``s_T`` (C*K_inter x C*K_inter). The student predicts over C*K_inter sub-classes.

The codewords come from the file of :mod:`kdplug.letkd.io`, read at the first training step. Choices where the
supplement is silent (docs/letkd.md):

* Heterogeneous pairs: when the teacher's map and the student's differ in size, the teacher's is average-pooled
  (adaptive) to the student's before the assignment, and the codewords are fitted on the pooled features.
* Fewer codewords in the file than the layer predicts (K capped at the number of feature vectors): the extra
  outputs get a target of 0 (warned once).
* Labels for the intermediate level: the hard label of the image (the argmax of a mixup / cutmix soft label).
* The assignment is computed in float32, also under autocast (distances to codewords cancel badly in float16).
"""
import warnings
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdplug.losses.functional import check_hyperparameter, kl_rows, reduce_per_sample

from .codewords import assign_subclasses, squared_distances
from .io import FIT_TOOL, LEVELS, SECTION_TENSORS, check_fitted_from, codewords_section, load_codewords_file


def rows(feature: Tensor) -> Tensor:
    """(N, C, H, W) -> (N*H*W, C): one row per spatial position, in (n, h, w) order."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


def align_teacher_feature(teacher_feature: Tensor, size: Tuple[int, int]) -> Tensor:
    """The teacher's map average-pooled to the student's spatial size when they differ (heterogeneous pairs)."""
    if tuple(teacher_feature.shape[-2:]) != tuple(size):
        return F.adaptive_avg_pool2d(teacher_feature, tuple(size))
    return teacher_feature


def penultimate_assignment(teacher_rows: Tensor, codewords: Tensor, temperature: float = 1.0) -> Tensor:
    """Alg. 1: ``softmax(-||f - rho_k||^2 / T)`` over the codewords, (n, K)."""
    return torch.softmax(-squared_distances(teacher_rows.float(), codewords.float()) / temperature, dim=1)


def intermediate_assignment(teacher_rows: Tensor, labels: Tensor, section: Mapping[str, Tensor]) -> Tensor:
    """Alg. 2 online: LDA projection, nearest sub-class of the row's class, its row of the scores, (n, C*k)."""
    z = teacher_rows.float() @ section['lda_weight'].t() + section['lda_bias']
    h1 = assign_subclasses(z, labels, section['prototypes'], section['valid'], int(section['subclasses']))
    return section['scores'][h1]


def mean_entropy(probs: Tensor) -> Tensor:
    """Mean over the rows of the entropy ``-sum_k p_k log p_k`` of each row of ``probs`` (n, K), in nats, detached
    (``0 log 0 = 0``; an empty batch gives 0)."""
    with torch.no_grad():
        return reduce_per_sample(torch.special.entr(probs.float()).sum(dim=1))


def kl_batchmean(target: Tensor, logits: Tensor) -> Tensor:
    """``KL(target || softmax(logits))`` summed over the last dim and averaged over the rows, in float32
    (``0 log 0 = 0``): kdplug's KL of rows and its one reduction."""
    return reduce_per_sample(kl_rows(target.float().log(), torch.log_softmax(logits.float(), dim=1)))


class LetKDLoss(nn.Module):
    """What the two letKD losses share (a student-module loss of :class:`kdplug.Distiller` training one
    :class:`~kdplug.letkd.layer.LetKDLayer` of the student); build :class:`LetKDPenultimateLoss` or
    :class:`LetKDIntermediateLoss`.

    Args:
        student_module: the position of the layer in the student (its key in ``BackboneWithModules.modules``,
            e.g. ``'out'`` or ``'layer2'``).
        codewords: the file written by ``tools/fit_codewords.py`` (:mod:`kdplug.letkd.io`); read at the first
            training step (the model builds without it), section ``student_module``.
        teacher_stage: the position of the teacher feature (same syntax); default ``student_module``.
        loss_weight: factor of the loss.

    ``forward(layer, teacher_feature, target)`` returns ``{'loss': weighted KL, 'agreement': fraction of positions
    where the student's and the teacher's top assignments agree, 'entropy_teacher': mean entropy of p_T,
    'entropy_student': mean entropy of p_S}``; the entropies are in nats, averaged over every position of the
    batch, detached (diagnostics: 0 is one-hot, log K uniform; with raw squared distances p_T may be near one-hot).
    """

    #: The level of the paper, the key of the codewords file's section kind (:data:`kdplug.letkd.io.LEVELS`).
    level = ''

    def __init__(self, student_module: str, codewords: Optional[str] = None, teacher_stage: Optional[str] = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if self.level not in LEVELS:
            raise TypeError('LetKDLoss is the common part of letKD\'s losses: build LetKDPenultimateLoss (letKD-1) '
                            'or LetKDIntermediateLoss (letKD-2\'s middle stage)')
        loss_weight = check_hyperparameter(f'{type(self).__name__}: loss_weight', loss_weight)
        self.student_module, self.codewords_path = student_module, codewords
        self.teacher_stage = teacher_stage or student_module
        self.loss_weight = float(loss_weight)
        self._buffer_names: Optional[Tuple[str, ...]] = None  # the codewords' buffers, once loaded
        self._padding_warned = False
        self.teacher_checkpoint: Optional[str] = None  # the run's teacher (check_teacher), compared with the file's

    def check_teacher(self, source: nn.Module) -> None:
        """Called by the distiller at build with its teacher source: the codewords are fitted once from a fixed
        teacher's features (its checkpoint), so a teacher that changes (an EMA of the student) cannot use them; the
        checkpoint is compared with the file's when the codewords are read."""
        checkpoint = getattr(source, 'checkpoint', None)
        if not isinstance(checkpoint, str):
            raise ValueError(f'{self.described} distils through codewords fitted once from a fixed '
                             f'teacher\'s checkpoint (python {FIT_TOOL} CONFIG), and {source.description} has none: '
                             "use teacher=dict(type='CheckpointTeacher', model=..., checkpoint=...)")
        self.teacher_checkpoint = checkpoint

    # -- the codewords, training-only, non-persistent buffers ---------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._buffer_names is not None

    def load_codewords(self, source: Union[str, Mapping, None] = None) -> None:
        """Load the section of this loss from a codewords file (default: ``codewords``) or from a loaded file /
        section dict; the tensors become non-persistent buffers (they follow ``.to()``, never in checkpoints)."""
        source = self.codewords_path if source is None else source
        if source is None:
            raise ValueError(f'{self.described}: no codewords file: set codewords= to the file '
                             f'of python {FIT_TOOL} CONFIG')
        where = source if isinstance(source, str) else 'the given codewords'
        loaded = load_codewords_file(source) if isinstance(source, str) else source
        section = codewords_section(loaded, self.student_module, self.level, where)
        check_fitted_from(loaded, self.teacher_checkpoint, where)
        names = SECTION_TENSORS[self.level]
        for name in names:
            self.register_buffer(f'cw_{name}', section[name].clone(), persistent=False)
        self._buffer_names = names
        self.section_loaded(section)

    def section_loaded(self, section: Mapping) -> None:
        """What a level keeps of its section besides the tensors (the intermediate level: K_inter)."""

    def _tensors(self) -> Dict[str, Tensor]:
        return {name: getattr(self, f'cw_{name}') for name in self._buffer_names}

    @property
    def described(self) -> str:
        """The loss as errors name it: ``LetKDPenultimateLoss('out')``."""
        return f'{type(self).__name__}({self.student_module!r})'

    # -- the loss ----------------------------------------------------------------------------------------------------
    def teacher_assignment(self, teacher_feature: Tensor, size: Tuple[int, int],
                           target: Optional[Tensor] = None) -> Tensor:
        """``p_T``: (N*H*W, K) rows for the teacher map aligned to the student's spatial ``size``."""
        if not self.loaded:
            self.load_codewords()
            self.to(teacher_feature.device)
        feature = align_teacher_feature(teacher_feature.float(), size)
        teacher_rows = rows(feature)
        tensors = self._tensors()
        expected = self.feature_channels(tensors)
        if teacher_rows.shape[1] != expected:
            raise ValueError(f'{self.described}: the teacher feature at {self.teacher_stage!r} has '
                             f'{teacher_rows.shape[1]} channels, the codewords {expected}: they were fitted for '
                             f'another teacher or stage; fit them again with python {FIT_TOOL} CONFIG')
        return self.assignment(teacher_rows, feature.shape[2] * feature.shape[3], tensors, target)

    def feature_channels(self, tensors: Mapping[str, Tensor]) -> int:
        """The channels of the teacher features the loaded codewords were fitted on."""
        raise NotImplementedError

    def assignment(self, teacher_rows: Tensor, positions: int, tensors: Mapping[str, Tensor],
                   target: Optional[Tensor]) -> Tensor:
        """``p_T`` of the teacher's rows (``positions`` per image), (n, K)."""
        raise NotImplementedError

    def check_assignments(self, k_teacher: int, k_student: int) -> None:
        """Refuse a layer that predicts fewer assignments than the codewords give (more are padded with 0)."""
        if k_teacher > k_student:
            raise ValueError(f'{self.described}: the codewords give {k_teacher} assignments but the '
                             f'student layer predicts {k_student}: set its num_codewords to {k_teacher}')

    def forward(self, layer: nn.Module, teacher_feature: Tensor, target: Optional[Tensor] = None
                ) -> Dict[str, Tensor]:
        if not isinstance(layer, nn.Module):
            raise TypeError('LetKDLoss trains a LetKDLayer of the student: use it in kdplug.Distiller (which calls a '
                            'loss with a student_module as loss(layer, teacher_feature, target)), not as a logit loss')
        logits = getattr(layer, 'assignment_logits', None)
        if logits is None:
            raise RuntimeError(f'{self.described}: the student layer has no assignment logits: '
                               'the student must run forward in training mode before the loss')
        layer.assignment_logits = None  # consumed: never reused by a later step
        # distances to codewords cancel badly in float16 / bfloat16: the assignment is float32 even under --amp
        with torch.autocast(teacher_feature.device.type, enabled=False):
            p_t = self.teacher_assignment(teacher_feature, tuple(logits.shape[-2:]), target)
        student_rows = rows(logits)
        k_student, k_teacher = student_rows.shape[1], p_t.shape[1]
        self.check_assignments(k_teacher, k_student)
        if k_teacher < k_student:
            if not self._padding_warned:
                warnings.warn(f'{self.described}: the codewords file has {k_teacher} codewords, the '
                              f'layer predicts {k_student}: the {k_student - k_teacher} extra outputs get target 0')
                self._padding_warned = True
            p_t = F.pad(p_t, (0, k_student - k_teacher))
        loss = kl_batchmean(p_t, student_rows)
        with torch.no_grad():
            agreement = (student_rows.argmax(1) == p_t.argmax(1)).float().mean()
            entropy_student = mean_entropy(torch.softmax(student_rows.float(), dim=1))
        return {'loss': self.loss_weight * loss, 'agreement': agreement, 'entropy_teacher': mean_entropy(p_t),
                'entropy_student': entropy_student}

    def extra_repr(self) -> str:
        return (f'student_module={self.student_module!r}, teacher_stage={self.teacher_stage!r}, '
                f'codewords={self.codewords_path!r}, loss_weight={self.loss_weight}')


class LetKDPenultimateLoss(LetKDLoss):
    """letKD-1 (Alg. 1): ``p_T = softmax(-||f - rho_k||^2 / T)`` over the K k-means codewords of the teacher's
    features (module docstring). ``temperature``: T (1 in the paper); the other arguments as :class:`LetKDLoss`."""

    level = 'penultimate'

    def __init__(self, student_module: str, codewords: Optional[str] = None, teacher_stage: Optional[str] = None,
                 temperature: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__(student_module, codewords, teacher_stage, loss_weight)
        self.temperature = float(check_hyperparameter(f'{type(self).__name__}: temperature', temperature,
                                                      strict=True))

    def feature_channels(self, tensors: Mapping[str, Tensor]) -> int:
        return tensors['codewords'].shape[1]

    def assignment(self, teacher_rows: Tensor, positions: int, tensors: Mapping[str, Tensor],
                   target: Optional[Tensor]) -> Tensor:
        return penultimate_assignment(teacher_rows, tensors['codewords'], self.temperature)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, temperature={self.temperature}'


class LetKDIntermediateLoss(LetKDLoss):
    """letKD-2's middle-stage loss (Alg. 2): the LDA-projected teacher feature's nearest sub-class of its image's
    class gives its row of the sub-class scores as ``p_T`` (module docstring); the student's layer predicts C x
    K_inter sub-classes. No temperature (the fitted scores take none); arguments as :class:`LetKDLoss`."""

    level = 'intermediate'
    subclasses = 0  # K_inter, from the codewords file

    def section_loaded(self, section: Mapping) -> None:
        self.subclasses = int(section['subclasses'])

    def _tensors(self) -> Dict[str, Tensor]:
        return dict(super()._tensors(), subclasses=self.subclasses)

    def feature_channels(self, tensors: Mapping[str, Tensor]) -> int:
        return tensors['lda_weight'].shape[1]

    def assignment(self, teacher_rows: Tensor, positions: int, tensors: Mapping[str, Tensor],
                   target: Optional[Tensor]) -> Tensor:
        if target is None:
            raise ValueError(f'{self.described} needs the labels of the images')
        labels = target.argmax(1) if target.dim() == 2 else target
        return intermediate_assignment(teacher_rows, labels.long().repeat_interleave(positions), tensors)

    def check_assignments(self, k_teacher: int, k_student: int) -> None:
        if k_teacher != k_student:  # C classes x K sub-classes: no padding here
            raise ValueError(f'{self.described}: the codewords were fitted for {k_teacher // self.subclasses} '
                             f'classes x {self.subclasses} sub-classes = {k_teacher} assignments, the student layer '
                             f'predicts {k_student}: fitted on another dataset (or class count)? Fit them again with '
                             f'python {FIT_TOOL} CONFIG, or set the layer\'s num_codewords to {k_teacher}')
