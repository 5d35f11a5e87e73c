"""letKD: Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide" (BMVC 2023,
arXiv:2309.02843), from its supplementary material (the "supplement" below).

Three parts, torch only (no mmengine, no mmpretrain):

* :class:`LetKDLayer`, the **student-side module** (Fig. 2 of the paper, supplement section 2.2): inserted into the
  student at a stage (``kdplug.BackboneWithModules``), it stays there at inference::

      a     = s1 * cos(x, w1_k)                 normalised 1x1 conv (input and kernels l2-normalised), K outputs,
                                                learnable scale s1: the student's assignment logits
      p_hat = ReLU(BN(a))                       BN-ReLU, the "soft maximiser" of the appendix
      x_hat = x + alpha * s2 * conv(p_hat, w2)  normalised 1x1 conv back to the C channels of x (kernels
                                                l2-normalised), learnable scale s2, added to the student feature

  The student's prediction of the teacher's assignment is ``p_S = softmax(a)`` over the K channels, at every spatial
  position (Alg. 3 returns ``x_hat, p_S = KDLayer(x)``). ``a`` is kept (training mode only) as
  ``layer.assignment_logits`` for the loss.
* :class:`LetKDLoss`, the **teacher side**, a loss of the distiller (not part of the student, never exported):
  the teacher's soft assignment ``p_T`` of each spatial feature of the teacher at the same stage, and
  ``KL(p_T || p_S)`` summed over the K assignments and averaged over every spatial position of the batch
  (``batchmean`` with a row per position), times ``loss_weight``.

  - ``level='penultimate'`` (letKD-1, Alg. 1): ``p_T = softmax(-||f - rho_k||^2 / T)`` over the K k-means codewords
    ``rho`` of the teacher's features. The pseudo-code writes ``softmax(d)`` with ``d`` the squared distances; a soft
    assignment must favour the NEAREST codeword, so kdplug uses ``softmax(-d)`` (the sign is a typo of the
    pseudo-code; the authors' code, adagorgun/letKD-framework, has ``softmax(-T * distances)``). ``T``
    (``temperature``) is 1 in the paper.
  - ``level='intermediate'`` (letKD-2, Alg. 2): the teacher feature is projected by LDA (``W f + b``), the
    position is given the nearest sub-class prototype **of its image's class** (``k*``), and ``p_T`` is the row
    ``k*`` of the sub-class score matrix ``s_T`` (C*K_inter x C*K_inter). The student predicts over C*K_inter
    sub-classes.
* The **offline codeword math** used by ``tools/fit_codewords.py`` is in :mod:`kdplug.models.codewords` (k-means,
  LDA, sub-classes and their scores); the file format is read here (:func:`load_codewords_file`).

Choices where the supplement is silent (documented here and in docs/letkd.md):

* ``p_S`` is the softmax of the scaled cosine similarities ``a`` (before BN); BN-ReLU shapes only the feature that
  is added back. s1 starts at 10 (a softmax over thousands of cosines needs a range of ~10 to be peaked; the
  authors' configs start it at 3), s2 at 1. docs/letkd.md lists each open choice with the supplement's words.
  "The kernels are l2 normalised": for both convs each output kernel (one filter, over the input channels) has
  unit norm; the first conv also l2-normalises its input at every position (cosine similarity).
* ``alpha`` (the paper's alpha_inter / alpha_penult, Fig. 2) is a fixed factor of the layer's output.
* Heterogeneous pairs: when the teacher's map and the student's differ in size, the teacher's is average-pooled
  (adaptive) to the student's before the assignment, and the codewords are fitted on the pooled features.
* Intermediate scores ``s_T`` ("NNSearch(F_LDA, prot)"): for every training feature, ``h1`` is its nearest prototype
  among its class's sub-classes and ``h2`` its nearest prototype among ALL sub-classes (hard nearest-neighbour
  search); row ``h1`` of ``s_T`` is the empirical distribution ``p(h2 | h1)`` (the supplement's Fig. 2 caption:
  ``p_T(i) = p(h2(z_i) | h1(z_i, y))``). A sub-class with no feature gets a one-hot row on itself.
* LDA: within-class covariance with a ridge ``1e-6 * trace / D`` (numerical safety for dead channels),
  ``min(C - 1, D)`` components, scaled to unit within-class variance (as scikit-learn's ``transform``,
  ``x -> W (x - mean)``, i.e. ``b = -W mean``).
* A class with fewer training vectors than K_inter gets fewer sub-classes (``valid`` marks the prototypes that
  exist); a position whose class has no prototype at all (a class absent from the fitting data) falls back to the
  nearest prototype of any class. Fewer codewords in the file than the layer predicts (K capped at the number of
  feature vectors): the extra outputs get a target of 0 (warned once).
* Labels for the intermediate level: the hard label of the image (the argmax of a mixup / cutmix soft label).
"""
import math
import warnings
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdplug.losses.functional import kl_rows, reduce_per_sample

#: ``format`` key of a codewords file written by tools/fit_codewords.py.
CODEWORDS_FORMAT = 'kdplug.letkd.codewords/1'
LEVELS = ('penultimate', 'intermediate')
FIT_TOOL = 'tools/fit_codewords.py'

Log = Optional[Callable[[str], None]]


# ------------------------------------------------------------------------------------------- the student layer


class NormConv1x1(nn.Module):
    """1x1 convolution with l2-normalised kernels (each output filter has unit norm) and a learnable scalar scale;
    with ``normalize_input`` the input is l2-normalised over channels at every position, so that the output is
    ``scale * cosine(input, kernel)``."""

    def __init__(self, in_channels: int, out_channels: int, normalize_input: bool, init_scale: float = 1.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1) / math.sqrt(in_channels))
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.normalize_input, self.eps = normalize_input, eps

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize_input:
            x = F.normalize(x, dim=1, eps=self.eps)
        weight = F.normalize(self.weight, dim=1, eps=self.eps)  # dim 1 = the input channels of each filter
        return self.scale * F.conv2d(x, weight)

    def extra_repr(self) -> str:
        return (f'{self.weight.shape[1]}, {self.weight.shape[0]}, normalize_input={self.normalize_input}')


class LetKDLayer(nn.Module):
    """The KD layer of letKD: ``x -> x + alpha * NormConv(ReLU(BN(NormConv_cos(x))))``, same shape as ``x``.

    Args:
        in_channels: channels C of the student feature it is inserted on.
        num_codewords: K, the size of the assignment it predicts: the number of k-means codewords at the
            penultimate level (4096 in the paper), C_classes * K_inter (e.g. 100 * 8) at the intermediate level.
        alpha: the paper's alpha_penult / alpha_inter, the factor of the layer's output (1 in the paper;
            0 removes the feature transform, Table 5).
        init_scale: initial learnable scale of the first (cosine) conv, i.e. of the assignment logits.

    ``assignment_logits`` (N, K, H, W): the logits of the student's assignment from the last forward in training
    mode (None in eval mode); :class:`LetKDLoss` consumes it. Works on any (N, C, H, W) feature.
    """

    def __init__(self, in_channels: int, num_codewords: int, alpha: float = 1.0, init_scale: float = 10.0) -> None:
        super().__init__()
        if in_channels < 1 or num_codewords < 1:
            raise ValueError(f'LetKDLayer: in_channels and num_codewords must be >= 1, got {in_channels}, '
                             f'{num_codewords}')
        self.in_channels, self.num_codewords, self.alpha = in_channels, num_codewords, float(alpha)
        self.assign = NormConv1x1(in_channels, num_codewords, normalize_input=True, init_scale=init_scale)
        self.bn = nn.BatchNorm2d(num_codewords)
        self.embed = NormConv1x1(num_codewords, in_channels, normalize_input=False, init_scale=1.0)
        self.assignment_logits: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'LetKDLayer(in_channels={self.in_channels}) got a feature of shape {tuple(x.shape)}: '
                             'set in_channels to the channels of the stage it is inserted on')
        logits = self.assign(x)
        self.assignment_logits = logits if self.training else None
        return x + self.alpha * self.embed(F.relu(self.bn(logits)))

    def __getstate__(self):
        # the cached logits are part of an autograd graph: copies and pickles of the layer (EMA models, deepcopy)
        # start without them
        state = super().__getstate__()
        return {**state, 'assignment_logits': None}

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}'


# ------------------------------------------------------------------------------------------- codeword math


def rows(feature: Tensor) -> Tensor:
    """(N, C, H, W) -> (N*H*W, C): one row per spatial position, in (n, h, w) order."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


def align_teacher_feature(teacher_feature: Tensor, size: Tuple[int, int]) -> Tensor:
    """The teacher's map average-pooled to the student's spatial size when they differ (heterogeneous pairs)."""
    if tuple(teacher_feature.shape[-2:]) != tuple(size):
        return F.adaptive_avg_pool2d(teacher_feature, tuple(size))
    return teacher_feature


def _chunk_rows(num_centers: int, budget: int = 1 << 24) -> int:
    return max(1, budget // max(1, num_centers))


def squared_distances(x: Tensor, centers: Tensor) -> Tensor:
    """||x_i - c_k||^2, (n, k), clamped at 0."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centers.t() + (centers * centers).sum(1)
    return d.clamp_min_(0)


def nearest(x: Tensor, centers: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Index and squared distance of the nearest center of each row of ``x``, in chunks of rows (bounded memory).
    ``mask`` (k,) bool: only these centers are candidates."""
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    step = _chunk_rows(centers.shape[0])
    for start in range(0, x.shape[0], step):
        d = squared_distances(x[start:start + step], centers)
        if mask is not None:
            d[:, ~mask] = float('inf')
        dist[start:start + step], idx[start:start + step] = d.min(1)
    return idx, dist


def assign_subclasses(z: Tensor, labels: Tensor, prototypes: Tensor, valid: Tensor, k: int) -> Tensor:
    """``k*`` of Alg. 2: the nearest valid prototype among the sub-classes of each row's class (rows of a class
    without prototypes: the nearest valid prototype of any class). Returns indices into the C*k prototypes."""
    labels = labels.long()
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    step = _chunk_rows(prototypes.shape[0])
    own = torch.arange(prototypes.shape[0], device=z.device) // k
    for start in range(0, z.shape[0], step):
        d = squared_distances(z[start:start + step], prototypes)
        d[:, ~valid] = float('inf')
        own_d = torch.where(own.unsqueeze(0) == labels[start:start + step].unsqueeze(1), d,
                            torch.full_like(d, float('inf')))
        dist, idx = own_d.min(1)
        fallback = torch.isinf(dist)
        if fallback.any():
            idx[fallback] = d[fallback].argmin(1)
        out[start:start + step] = idx
    return out


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


# ------------------------------------------------------------------------------------------- the file


def load_codewords_file(path: str) -> Dict:
    """A codewords file of tools/fit_codewords.py, loaded with ``weights_only=True`` and checked."""
    import os
    if not os.path.exists(path):
        raise FileNotFoundError(
            f'the letKD codewords file {path!r} does not exist. Fit it first, with the trained teacher: '
            f'python {FIT_TOOL} CONFIG (writes the file the config names; --device cuda on a GPU)')
    from kdplug.engine.checkpoint import load_checkpoint_file
    loaded = load_checkpoint_file(path, role='letKD codewords')
    if not isinstance(loaded, dict) or loaded.get('format') != CODEWORDS_FORMAT:
        raise ValueError(f'{path!r} is not a letKD codewords file of {FIT_TOOL} (format {CODEWORDS_FORMAT!r})')
    return loaded


class LetKDLoss(nn.Module):
    """The letKD distillation loss of one :class:`LetKDLayer` of the student (a student-module loss).

    Args:
        student_module: the position of the layer in the student (its key in ``BackboneWithModules.modules``,
            e.g. ``'out'`` or ``'layer2'``).
        level: ``'penultimate'`` (letKD-1: k-means codewords) or ``'intermediate'`` (letKD-2: LDA + sub-classes).
        codewords: the file written by ``tools/fit_codewords.py``; read at the first training step (the model
            builds without it), section ``student_module``.
        teacher_stage: the position of the teacher feature (same syntax); default ``student_module``.
        temperature: T of the penultimate soft assignment ``softmax(-d / T)`` (1 in the paper).
        loss_weight: factor of the loss.

    ``forward(layer, teacher_feature, target)`` returns ``{'loss': weighted KL, 'agreement': fraction of positions
    where the student's and the teacher's top assignments agree, 'entropy_teacher': mean entropy of p_T,
    'entropy_student': mean entropy of p_S}``; the entropies are in nats, averaged over every position of the
    batch, detached (diagnostics: 0 is one-hot, log K uniform; with raw squared distances p_T may be near one-hot).
    """

    def __init__(self, student_module: str, level: str = 'penultimate', codewords: Optional[str] = None,
                 teacher_stage: Optional[str] = None, temperature: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"LetKDLoss: level must be one of {LEVELS}, got {level!r}")
        if temperature <= 0:
            raise ValueError(f'LetKDLoss: temperature must be > 0, got {temperature}')
        if level == 'intermediate' and temperature != 1.0:
            raise ValueError('LetKDLoss: the intermediate level distils the fitted sub-class scores, which take no '
                             f'temperature; got temperature={temperature}: leave it at 1')
        self.student_module, self.level, self.codewords_path = student_module, level, codewords
        self.teacher_stage = teacher_stage or student_module
        self.temperature, self.loss_weight = float(temperature), float(loss_weight)
        self._buffer_names: Optional[Tuple[str, ...]] = None  # the codewords' buffers, once loaded
        self.subclasses = 0
        self._padding_warned = False

    # -- the codewords, training-only, non-persistent buffers ---------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._buffer_names is not None

    def load_codewords(self, source: Union[str, Mapping, None] = None) -> None:
        """Load the section of this loss from a codewords file (default: ``codewords``) or from a loaded file /
        section dict; the tensors become non-persistent buffers (they follow ``.to()``, never in checkpoints)."""
        source = self.codewords_path if source is None else source
        if source is None:
            raise ValueError(f'LetKDLoss({self.student_module!r}): no codewords file: set codewords= to the file '
                             f'of python {FIT_TOOL} CONFIG')
        where = source if isinstance(source, str) else 'the given codewords'
        loaded = load_codewords_file(source) if isinstance(source, str) else source
        section = loaded['sections'].get(self.student_module) if 'sections' in loaded else loaded
        if section is None:
            raise ValueError(f'{where} has no codewords for the student module {self.student_module!r} (it has '
                           f'{sorted(loaded["sections"])}): fit them again with python {FIT_TOOL} CONFIG')
        if section.get('level') != self.level:
            raise ValueError(f'{where}: the codewords of {self.student_module!r} are for the {section.get("level")} '
                             f'level, the loss is {self.level!r}: fit them again with python {FIT_TOOL} CONFIG')
        names = ('codewords', ) if self.level == 'penultimate' else (
            'lda_weight', 'lda_bias', 'prototypes', 'valid', 'scores')
        missing = [name for name in names if name not in section]
        if missing:
            raise ValueError(f'{where}: section {self.student_module!r} lacks {missing}')
        for name in names:
            self.register_buffer(f'cw_{name}', section[name].clone(), persistent=False)
        self._buffer_names = names
        if self.level == 'intermediate':
            self.subclasses = int(section['subclasses'])

    def _tensors(self) -> Dict[str, Tensor]:
        out = {name: getattr(self, f'cw_{name}') for name in self._buffer_names}
        if self.level == 'intermediate':
            out['subclasses'] = self.subclasses
        return out

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
        expected = (tensors['codewords'] if self.level == 'penultimate' else tensors['lda_weight']).shape[1]
        if teacher_rows.shape[1] != expected:
            raise ValueError(f'LetKDLoss({self.student_module!r}): the teacher feature at {self.teacher_stage!r} has '
                             f'{teacher_rows.shape[1]} channels, the codewords {expected}: they were fitted for '
                             f'another teacher or stage; fit them again with python {FIT_TOOL} CONFIG')
        if self.level == 'penultimate':
            return penultimate_assignment(teacher_rows, tensors['codewords'], self.temperature)
        if target is None:
            raise ValueError('the intermediate letKD loss needs the labels of the images')
        labels = target.argmax(1) if target.dim() == 2 else target
        per_position = labels.long().repeat_interleave(feature.shape[2] * feature.shape[3])
        return intermediate_assignment(teacher_rows, per_position, tensors)

    def forward(self, layer: nn.Module, teacher_feature: Tensor, target: Optional[Tensor] = None
                ) -> Dict[str, Tensor]:
        if not isinstance(layer, nn.Module):
            raise TypeError('LetKDLoss trains a LetKDLayer of the student: use it in kdplug.Distiller (which calls a '
                            'loss with a student_module as loss(layer, teacher_feature, target)), not as a logit loss')
        logits = getattr(layer, 'assignment_logits', None)
        if logits is None:
            raise RuntimeError(f'LetKDLoss({self.student_module!r}): the student layer has no assignment logits: '
                               'the student must run forward in training mode before the loss')
        layer.assignment_logits = None  # consumed: never reused by a later step
        # distances to codewords cancel badly in float16 / bfloat16: the assignment is float32 even under --amp
        with torch.autocast(teacher_feature.device.type, enabled=False):
            p_t = self.teacher_assignment(teacher_feature, tuple(logits.shape[-2:]), target)
        student_rows = rows(logits)
        k_student, k_teacher = student_rows.shape[1], p_t.shape[1]
        if k_teacher > k_student:
            raise ValueError(f'LetKDLoss({self.student_module!r}): the codewords give {k_teacher} assignments but the '
                             f'student layer predicts {k_student}: set its num_codewords to {k_teacher}')
        if k_teacher < k_student:
            if not self._padding_warned:
                warnings.warn(f'LetKDLoss({self.student_module!r}): the codewords file has {k_teacher} codewords, the '
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
        return (f'student_module={self.student_module!r}, level={self.level!r}, teacher_stage={self.teacher_stage!r}, '
                f'codewords={self.codewords_path!r}, loss_weight={self.loss_weight}')
