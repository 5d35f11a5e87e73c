"""Semantic segmentation with mmsegmentation 1.x segmentors (``EncoderDecoder``, ``CascadeEncoderDecoder``): the
decode head's per-pixel logits, one row per pixel, distilled from the teacher's decode head at the same pixels.

    model = dict(type='kdplug.Distiller',
                 task=dict(type='SemanticSegmentationTask'),            # options below
                 student=dict(cfg_path='mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
                 teacher=dict(type='CheckpointTeacher', model=dict(cfg_path=...), checkpoint=...),
                 losses=dict(kd=dict(type='KDLoss', temperature=1.0)))

Written against kdplug's task contract only (:mod:`kdplug.tasks.base`), like any third-party task.

**One step.** The student's own ``loss()`` runs unchanged, so its losses are mmseg's, keys and values
(``decode.loss_ce``, ``decode.acc_seg``, ``aux.loss_ce``...; the distiller logs them as ``student.*``). On the way
the task records the logits its decode head hands to ``loss_by_feat`` (the documented step of mmseg's
``BaseDecodeHead.loss``: ``forward``, then ``loss_by_feat(seg_logits, data_samples)``), on the head instance only,
restored afterwards, as kdplug's detection task records ``bbox_loss``. The student runs once; the auxiliary heads
keep their own losses and are not distilled. The teacher runs in mmengine's ``mode='tensor'`` (its backbone,
neck and decode head(s), no loss, no post-processing) on the same preprocessed batch.

**Rows.** Logits (N, C, h, w) become rows (N h w, C) in (image, y, x) order; the teacher's logits for the same
pixels are resized (bilinear, the teacher head's ``align_corners``) to the student's size when their decode heads'
output sizes differ (another output stride, another head).

**Resolution** (option ``resolution``):

* ``'logits'`` (default): rows at the decode head's output resolution (1/8 of the input for the ``-d8`` models),
  the labels resized to it by nearest (``nearest-exact``: the label at the centre of each logit's cell). Why:
  memory (a 512x1024 crop at 1/8 is 8 192 rows per image, at full size 524 288, and a loss keeps several
  (rows, C) tensors: softmaxes, their gradients), and the full-size logits are only bilinear interpolations of the
  same h*w logits of both networks, so distilling them repeats the same logits with interpolation weights rather
  than adding information; this is also where logit distillation for segmentation usually works (the decode
  head's output). The cost: a cell on a boundary takes one of its labels (for the losses that use the target)
  and is ignored only when that sampled pixel is.
* ``'labels'``: the logits (student's and teacher's) upsampled to the label size (bilinear, each head's
  ``align_corners``), as mmseg's own ``loss_by_feat`` does before its cross-entropy: exact per-pixel targets and
  ignore mask, at output-stride-squared the rows (64 times more for ``-d8``).

**Labels and ignored pixels.** A row's target is its pixel's label (``gt_sem_seg`` of the data samples, as the
data preprocessor padded them: padding is ``seg_pad_val``, 255 by default, so padded pixels are ignored pixels).
A pixel labelled ``ignore_index`` (or anything outside [0, C)) weighs 0 (:attr:`LogitRows.weight`, so
``weighs_rows``: every loss must take ``weight=``) and gets target 0, a valid class, so that losses indexing by the
target (DKD, NKD) stay in range; its weight keeps it out of every loss. ``distill.num_pixels`` logs how many rows
took part (no "loss" in the key: mmengine would add it to the total).

Options:

* ``ignore_index``: the label of ignored pixels; default None: the student decode head's own (mmseg's default
  255). Given, it must be the student decode head's: the student's loss and the distillation ignore the same
  pixels.
* ``resolution``: ``'logits'`` (default) or ``'labels'``, see above.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdplug.tasks.base import LogitRows, StudentOutput, Task

RESOLUTIONS = ('logits', 'labels')


@dataclass
class PixelRows:
    """What the teacher needs to score the student's rows: their spatial size (h, w) per image."""
    size: Tuple[int, int]


def decode_head(segmentor: nn.Module) -> nn.Module:
    """The (last) decode head: the one whose output the segmentor predicts from."""
    head = segmentor.decode_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


def to_rows(logits: Tensor) -> Tensor:
    """(N, C, h, w) -> (N h w, C), rows in (image, y, x) order."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def resize_logits(logits: Tensor, size: Tuple[int, int], align_corners: bool) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode='bilinear', align_corners=align_corners)


def pixel_targets(labels: Tensor, num_classes: int, ignore_index: Optional[int]) -> Tuple[Tensor, Tensor]:
    """Targets (M,) and row weights (M,) of the labels (N, 1, h, w): weight 0 and target 0 for the pixels labelled
    ``ignore_index`` or outside [0, C)."""
    labels = labels.reshape(-1).long()
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid &= labels != ignore_index
    return torch.where(valid, labels, torch.zeros_like(labels)), valid.float()


class SemanticSegmentationTask(Task):
    """mmseg segmentors whose decode head computes its losses through ``loss_by_feat`` (see the module
    docstring); options ``ignore_index`` and ``resolution``."""

    scope = 'mmseg'
    default_data_preprocessor = 'SegDataPreProcessor'  # a run's or the student's own wins
    weighs_rows = True  # ignored pixels weigh 0

    def __init__(self, ignore_index: Optional[int] = None, resolution: str = 'logits') -> None:
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f'ignore_index={ignore_index!r}: give the integer label of ignored pixels (mmseg: 255), '
                             "or None for the student decode head's own")
        if resolution not in RESOLUTIONS:
            raise ValueError(f'resolution={resolution!r}: use "logits" (rows at the decode head\'s output size, '
                             'labels resized by nearest) or "labels" (logits upsampled to the label size)')
        self.ignore_index = ignore_index
        self.resolution = resolution

    # -- building -----------------------------------------------------------------------------------------------
    def build_model(self, cfg: dict, role: str) -> nn.Module:
        segmentor = super().build_model(cfg, role)
        if not hasattr(segmentor, 'decode_head') or not hasattr(segmentor, 'extract_feat'):
            raise TypeError(f'the {role} ({type(segmentor).__name__}) is not an mmseg segmentor with a decode_head: '
                            'SemanticSegmentationTask distils the decode head of e.g. EncoderDecoder')
        head = decode_head(segmentor)
        if not hasattr(head, 'loss_by_feat'):
            raise NotImplementedError(f'the {role}\'s decode head {type(head).__name__} has no loss_by_feat: '
                                      'SemanticSegmentationTask reads the logits it hands to it')
        out_channels = getattr(head, 'out_channels', None)
        if out_channels != head.num_classes:
            raise NotImplementedError(
                f'the {role}\'s decode head predicts {out_channels} channel(s) for {head.num_classes} classes (binary '
                'segmentation with a sigmoid): logit distillation needs one logit per class, so set '
                'out_channels=num_classes (softmax, use_sigmoid=False)')
        if role == 'student' and self.ignore_index is not None and head.ignore_index != self.ignore_index:
            raise ValueError(f'task ignore_index={self.ignore_index} but the student\'s decode head ignores '
                             f'{head.ignore_index}: the student\'s own loss and the distillation must ignore the '
                             'same pixels; set them alike (or leave the task\'s to None: the head\'s)')
        return segmentor

    def num_classes(self, model: nn.Module) -> Optional[int]:
        return getattr(decode_head(model), 'num_classes', None)

    def check_pair(self, student: nn.Module, teacher: nn.Module, data_preprocessor: nn.Module) -> None:
        super().check_pair(student, teacher, data_preprocessor)
        for model, role in ((student, 'student'), (teacher, 'teacher')):
            self.check_same_preprocessing(data_preprocessor, model, role)

    # -- a training step ----------------------------------------------------------------------------------------
    @contextmanager
    def recording_logits(self, segmentor: nn.Module) -> Iterator[List[Tensor]]:
        """Within this context, the logits the decode head hands to ``loss_by_feat`` are recorded (its own method
        runs, wrapped on the instance only, and is restored afterwards)."""
        head = decode_head(segmentor)
        own = head.__dict__.get('loss_by_feat')  # an instance attribute already there (another wrapper) stays
        original = head.loss_by_feat
        records: List[Tensor] = []

        def loss_by_feat(seg_logits, *args, **kwargs):
            records.append(seg_logits)
            return original(seg_logits, *args, **kwargs)
        head.loss_by_feat = loss_by_feat
        try:
            yield records
        finally:
            if own is None:
                del head.loss_by_feat  # the class's method again
            else:
                head.loss_by_feat = own

    def ignored_label(self, segmentor: nn.Module) -> Optional[int]:
        return self.ignore_index if self.ignore_index is not None else decode_head(segmentor).ignore_index

    @staticmethod
    def check_label_sizes(inputs: Tensor, data_samples: List) -> None:
        """A mask of another size than its image (a wrong file, a pipeline that resized only one of them) failed in
        mmseg's loss with a bare "stack expects each tensor to be equal size": name the file."""
        for sample in data_samples:
            if tuple(sample.gt_sem_seg.data.shape[-2:]) != tuple(inputs.shape[-2:]):
                raise ValueError(f'the label map {sample.metainfo.get("seg_map_path", "?")} is '
                                 f'{tuple(sample.gt_sem_seg.data.shape[-2:])} after the pipeline and its image '
                                 f'{sample.metainfo.get("img_path", "?")} {tuple(inputs.shape[-2:])}: each mask must '
                                 'have its image\'s size (check the file, and that every resize and crop of the '
                                 'pipeline comes after LoadAnnotations)')

    def student_forward(self, student: nn.Module, inputs: Tensor, data_samples: List,
                        positions: Sequence[str] = ()) -> StudentOutput:
        self.check_label_sizes(inputs, data_samples)
        with self.recording(student, positions) as feats, self.recording_logits(student) as records:
            losses = student.loss(inputs, data_samples)
        head = decode_head(student)
        if not records:
            raise NotImplementedError(f'{type(head).__name__} computed its losses without loss_by_feat: '
                                      'SemanticSegmentationTask cannot see its logits')
        seg_logits = records[-1]
        if not isinstance(seg_logits, Tensor) or seg_logits.dim() != 4 or seg_logits.shape[1] != head.num_classes:
            shown = tuple(seg_logits.shape) if isinstance(seg_logits, Tensor) else type(seg_logits).__name__
            raise NotImplementedError(f'{type(head).__name__} hands {shown} to loss_by_feat, not per-pixel logits '
                                      f'(N, {head.num_classes}, h, w): SemanticSegmentationTask distils those')
        labels = torch.stack([sample.gt_sem_seg.data for sample in data_samples]).to(seg_logits.device)
        if self.resolution == 'logits':
            size = tuple(seg_logits.shape[-2:])
            if tuple(labels.shape[-2:]) != size:  # labels hold at most 255 classes: exact in float
                labels = F.interpolate(labels.float(), size=size, mode='nearest-exact')
        else:
            size = tuple(labels.shape[-2:])
            seg_logits = resize_logits(seg_logits, size, head.align_corners)
        target, weight = pixel_targets(labels, head.num_classes, self.ignored_label(student))
        rows = LogitRows(logits=to_rows(seg_logits), target=target, weight=weight, context=PixelRows(size))
        return StudentOutput(losses=losses, rows=[rows], target=None, features=dict(feats),
                             diagnostics={'num_pixels': weight.sum()})  # on the device: no sync

    def teacher_logits(self, teacher: nn.Module, inputs: Tensor, data_samples: List,
                       student: StudentOutput) -> List[Tensor]:
        logits = teacher(inputs, data_samples, mode='tensor')
        if not isinstance(logits, Tensor) or logits.dim() != 4:
            shown = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise NotImplementedError(f'the teacher ({type(teacher).__name__}) gives {shown} in mode "tensor", not '
                                      'per-pixel logits (N, C, h, w)')
        return [to_rows(resize_logits(logits, rows.context.size, decode_head(teacher).align_corners))
                for rows in student.rows]
