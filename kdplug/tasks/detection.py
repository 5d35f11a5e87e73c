"""Two-stage detection with mmdet: the RoI classification head of Faster R-CNN, Mask R-CNN (its box head) and
Cascade R-CNN (every stage), distilled on the RoIs the student sampled::

    model = dict(type='kdplug.Distiller',
                 task=dict(type='TwoStageDetectionTask', background='include'),
                 student=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'), teacher=..., losses=...)

One step: the student's own ``loss()`` runs unchanged (its losses are mmdet's, keys and values); on the way kdplug
records, for every call of its RoI head's ``bbox_loss``, the sampled RoIs, their classification logits (C + 1,
background last) and their labels (background = C). The teacher's backbone, neck and RoI head (the same stage's
box head, for a cascade) then score the SAME RoIs; its RPN never runs: RoIs chosen by the teacher would teach the
student on boxes it never proposed. ``distill.num_rois`` logs how many RoIs took part (no "loss" in the key:
mmengine would add it to the total).

Options:

* ``background`` (RoIs labelled C, about three quarters of the sampled ones): ``'include'`` (default; a plain mean
  over RoIs, as mdistiller's detection recipe), ``'exclude'`` (foreground RoIs only: a batch without one has
  nothing to distil, the loss is 0, still attached to the graph, and ``distill.num_rois`` is 0), or a float ``w`` in
  [0, 1] (background rows weigh ``w``; the loss is sum(w_i l_i) / sum(w_i)). The last two need losses that take
  ``weight=``.
* ``stage_weights`` (Cascade R-CNN): the weight of each stage's distillation losses, logged as
  ``distill.s<i>.loss_<name>``; default the student's own ``stage_loss_weights`` (mmdet: 1, 0.5, 0.25).
"""
from contextlib import contextmanager
from numbers import Real
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .base import LogitRows, StudentOutput, Task

BackgroundPolicy = Union[str, float]
POLICIES = ('include', 'exclude')


def check_background(background: BackgroundPolicy) -> BackgroundPolicy:
    if isinstance(background, str) and background in POLICIES:
        return background
    if isinstance(background, Real) and not isinstance(background, bool) and 0.0 <= float(background) <= 1.0:
        return float(background)
    raise ValueError(f'background={background!r}: use "include" (every sampled RoI), "exclude" (foreground RoIs '
                     'only) or a float weight in [0, 1] for background RoIs')


def background_weights(labels: Tensor, num_classes: int, background: BackgroundPolicy) -> Optional[Tensor]:
    """Per-RoI weights (N,) for the policy, or None for 'include' (a plain mean; any loss accepts that)."""
    if background == 'include':
        return None
    weight = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
    weight[labels >= num_classes] = 0.0 if background == 'exclude' else float(background)
    return weight


def sampled_labels(sampling_results: List, num_classes: int) -> Tensor:
    """The label of every sampled RoI, in ``bbox2roi`` order (per image: positives, then negatives = background),
    as mmdet's ``BBoxHead.get_targets`` assigns them."""
    return torch.cat([torch.cat([res.pos_gt_labels.long(),
                                 res.pos_gt_labels.new_full((len(res.neg_priors),), num_classes).long()])
                      for res in sampling_results])


class RoIRecord:
    """What one call of a RoI head's ``bbox_loss`` saw: stage, RoIs (N, 5), logits (N, C + 1), labels (N,)."""

    def __init__(self, stage: int, rois: Tensor, cls_score: Tensor, labels: Tensor) -> None:
        self.stage, self.rois, self.cls_score, self.labels = stage, rois, cls_score, labels


def stages_of(head: nn.Module) -> int:
    return int(getattr(head, 'num_stages', 1))


def box_head(head: nn.Module, stage: int = -1) -> nn.Module:
    bbox_head = head.bbox_head
    return bbox_head[stage] if isinstance(bbox_head, nn.ModuleList) else bbox_head


class TwoStageDetectionTask(Task):
    """mmdet two-stage detectors whose RoI head computes its box losses through ``bbox_loss`` (StandardRoIHead,
    CascadeRoIHead and their subclasses)."""

    scope = 'mmdet'
    default_data_preprocessor = 'DetDataPreprocessor'

    def __init__(self, background: BackgroundPolicy = 'include',
                 stage_weights: Optional[Sequence[float]] = None) -> None:
        self.background = check_background(background)
        self.weighs_rows = self.background != 'include'
        if stage_weights is not None:
            if not isinstance(stage_weights, (list, tuple)) or \
                    not all(isinstance(w, Real) and not isinstance(w, bool) for w in stage_weights):
                raise TypeError(f'stage_weights={stage_weights!r}: give a list of numbers, one weight per RoI-head '
                                'stage, e.g. stage_weights=[1, 0.5, 0.25] (--cfg-options '
                                'model.task.stage_weights="[1,0.5,0.25]")')
            stage_weights = [float(w) for w in stage_weights]
            if not stage_weights or any(not w >= 0.0 for w in stage_weights) or not any(stage_weights):
                raise ValueError(f'stage_weights={stage_weights!r}: give one weight >= 0 per RoI-head stage, one of '
                                 'them at least > 0 (a stage of weight 0 is not distilled)')
        self.stage_weights = stage_weights

    # -- building -----------------------------------------------------------------------------------------------
    def build_model(self, cfg: dict, role: str) -> nn.Module:
        detector = super().build_model(cfg, role)
        head = getattr(detector, 'roi_head', None)
        if head is None or not hasattr(detector, 'extract_feat'):
            raise TypeError(f'the {role} ({type(detector).__name__}) is not a two-stage detector with a roi_head: '
                            'TwoStageDetectionTask distils the RoI classification head of e.g. FasterRCNN')
        if not getattr(head, 'with_bbox', False) or not hasattr(head, 'bbox_loss'):
            raise NotImplementedError(f'the {role}\'s RoI head {type(head).__name__} has no box head computed '
                                      'through bbox_loss: TwoStageDetectionTask distils that box head\'s logits')
        for stage in range(stages_of(head)):
            if getattr(box_head(head, stage), 'custom_cls_channels', False):  # SeesawLoss: C + 2 columns
                raise ValueError(
                    f'the {role}\'s box head classifies with {type(box_head(head, stage).loss_cls).__name__}, whose '
                    'logits are not one softmax over the classes and background (SeesawLoss: C class logits and 2 '
                    'objectness logits): TwoStageDetectionTask distils (N, C + 1) logits, background last. Give '
                    "both detectors roi_head.bbox_head.loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False)")
        if role == 'student' and self.stage_weights is not None and len(self.stage_weights) != stages_of(head):
            raise ValueError(f'stage_weights has {len(self.stage_weights)} weights, the student\'s RoI head '
                             f'{stages_of(head)} stages: give one weight per stage')
        return detector

    def num_classes(self, model: nn.Module) -> Optional[int]:
        """Foreground classes of the RoI box head (its logits have one more column: background)."""
        return getattr(box_head(model.roi_head), 'num_classes', None)

    def check_dataset(self, dataset: Any, student: nn.Module) -> None:
        """mmdet labels each box by its class's index in the dataset's ``metainfo['classes']``: more classes than
        the student's box head put labels past its columns (torch's "Target 45 is out of bounds" at some step); a
        student with a mask head on a pipeline that loads no masks failed in mmdet's words ("'InstanceData' object
        has no attribute 'masks'")."""
        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes') or ()
        num_classes = self.num_classes(student)
        if num_classes is not None and len(classes) > num_classes:
            raise ValueError(f'the training dataset has {len(classes)} classes ({", ".join(map(repr, classes[:3]))}, '
                             f'...), the student\'s box head {num_classes}: the boxes of classes {num_classes} to '
                             f'{len(classes) - 1} are past its columns. Set num_classes of both RoI heads '
                             f'(roi_head.bbox_head.num_classes={len(classes)}), or give the dataset '
                             'metainfo=dict(classes=...) with the classes to train')
        loads = [step for step in getattr(getattr(dataset, 'pipeline', None), 'transforms', [])
                 if type(step).__name__ == 'LoadAnnotations']
        masks = any(getattr(step, 'with_mask', False) for step in loads)  # mmcv's own LoadAnnotations has none
        if getattr(student.roi_head, 'with_mask', False) and loads and not masks:
            raise ValueError('the student has a mask head (Mask R-CNN), and the training pipeline loads no masks: '
                             "use dict(type='LoadAnnotations', with_bbox=True, with_mask=True)")

    def check_pair(self, student: nn.Module, teacher: nn.Module, data_preprocessor: nn.Module) -> None:
        super().check_pair(student, teacher, data_preprocessor)
        ours, theirs = stages_of(student.roi_head), stages_of(teacher.roi_head)
        if ours != theirs:
            raise ValueError(f'the student\'s RoI head has {ours} stage(s), the teacher\'s {theirs}: each stage is '
                             'distilled from the same stage of the teacher, so use teachers with as many stages '
                             '(a Cascade R-CNN teacher for a Cascade R-CNN student)')
        for stage in range(ours):  # the base class compares the last stage only
            classes = [getattr(box_head(model.roi_head, stage), 'num_classes', None) for model in (student, teacher)]
            if classes[0] != classes[1]:
                raise ValueError(f'stage {stage} of the RoI head predicts {classes[1]} classes in the teacher and '
                                 f'{classes[0]} in the student: give both the same num_classes in every stage')
        for model, role in ((student, 'student'), (teacher, 'teacher')):
            self.check_same_preprocessing(data_preprocessor, model, role)

    # -- a training step ----------------------------------------------------------------------------------------
    @staticmethod
    def check_autocast(device_type: str) -> None:
        """mmcv's RoIAlign has no bfloat16 kernel (CPU or CUDA): say so, with the fix, before mmcv fails."""
        if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
            raise RuntimeError(
                'RoI-head distillation under bfloat16 autocast: mmcv\'s RoIAlign has no bfloat16 kernel. Use float16 '
                "mixed precision: optim_wrapper=dict(type='AmpOptimWrapper', dtype='float16', ...)")

    @contextmanager
    def recording_rois(self, detector: nn.Module) -> Iterator[List[RoIRecord]]:
        """Within this context, every call of the RoI head's ``bbox_loss`` is recorded (the head is otherwise
        untouched: its own method runs, on the instance only, and is restored afterwards)."""
        from mmdet.structures.bbox import bbox2roi
        head = detector.roi_head
        original = head.bbox_loss
        records: List[RoIRecord] = []
        num_classes = self.num_classes(detector)

        def bbox_loss(*args, **kwargs):
            results = original(*args, **kwargs)
            # by type, not position: heads differ in their arguments (Cascade: stage first; Grid: img metas last)
            given = list(args) + list(kwargs.values())
            sampling_results = next((a for a in given if isinstance(a, (list, tuple)) and a
                                     and all(hasattr(r, 'pos_gt_labels') for r in a)), None)
            stage = next((a for a in given if isinstance(a, int) and not isinstance(a, bool)), 0)
            if not isinstance(results, dict) or 'cls_score' not in results or sampling_results is None:
                raise NotImplementedError(f'{type(head).__name__}.bbox_loss does not return the RoIs\' cls_score '
                                          'with its sampling results: TwoStageDetectionTask cannot see its RoIs')
            if results['cls_score'].shape[-1] != num_classes + 1:  # a head whose columns are not C + background
                raise ValueError(f'{type(head).__name__} gave RoI logits of {results["cls_score"].shape[-1]} columns '
                                 f'for {num_classes} classes: TwoStageDetectionTask distils one softmax over the '
                                 'classes and background (C + 1 columns, background last)')
            rois = bbox2roi([res.priors for res in sampling_results])
            records.append(RoIRecord(int(stage), rois, results['cls_score'],
                                     sampled_labels(sampling_results, num_classes)))
            return results
        head.bbox_loss = bbox_loss
        try:
            yield records
        finally:
            del head.bbox_loss  # the class's method again

    def student_forward(self, student: nn.Module, inputs: Tensor, data_samples: List,
                        positions: Sequence[str] = ()) -> StudentOutput:
        self.check_autocast(inputs.device.type)
        with self.recording(student, positions) as feats, self.recording_rois(student) as records:
            losses = student.loss(inputs, data_samples)
        if not records:
            raise NotImplementedError(f'{type(student.roi_head).__name__}.loss computed its losses without calling '
                                      'bbox_loss: TwoStageDetectionTask cannot see the RoIs it sampled')
        head = student.roi_head
        weights = self.stage_weights or list(getattr(head, 'stage_loss_weights', [1.0]))
        cascade = stages_of(head) > 1
        num_classes = self.num_classes(student)
        rows, counted = [], []
        for record in records:
            if weights[record.stage] == 0:  # a stage of weight 0 is not distilled: not scored, not counted
                continue
            weight = background_weights(record.labels, num_classes, self.background)
            rows.append(LogitRows(logits=record.cls_score, target=record.labels, weight=weight,
                                  scale=weights[record.stage], key=f's{record.stage}.' if cascade else '',
                                  context=record))
            # kept on the device (no sync): the RoIs that took part in the distillation losses
            counted.append(record.labels.new_tensor(record.labels.numel()) if weight is None else (weight > 0).sum())
        return StudentOutput(losses=losses, rows=rows, target=None, features=dict(feats),
                             diagnostics={'num_rois': torch.stack(counted).sum().float() if counted else
                                          inputs.new_zeros(())})

    def teacher_logits(self, teacher: nn.Module, inputs: Tensor, data_samples: List,
                       student: StudentOutput) -> List[Tensor]:
        feats = teacher.extract_feat(inputs)
        head = teacher.roi_head
        if stages_of(head) > 1:
            return [head._bbox_forward(rows.context.stage, feats, rows.context.rois)['cls_score']
                    for rows in student.rows]
        return [head._bbox_forward(feats, rows.context.rois)['cls_score'] for rows in student.rows]

    def tensor_forward(self, model: nn.Module, inputs: Any, data_samples: Optional[List]) -> Any:
        return model._forward(inputs, data_samples)

    def features(self, model: nn.Module, inputs: Any, positions: Sequence[str]) -> Dict[str, Tensor]:
        with self.recording(model, positions) as feats:
            model.extract_feat(inputs)
        return feats
