"""mmdet two-stage detectors (Faster R-CNN and any ``TwoStageDetector`` whose RoI head is a ``StandardRoIHead``).

What the RoI-head distiller needs from a detector, and nothing else:

* :func:`student_rois_and_losses` runs the student's training forward exactly as mmdet's ``TwoStageDetector.loss``
  and ``StandardRoIHead.loss`` do (RPN losses and proposals, assignment and sampling per image, box and mask
  losses), but keeps what mmdet throws away: the sampled RoIs, their classification logits (C + 1, background last)
  and their labels (background = C).
* :func:`teacher_cls_scores` runs the teacher's backbone, neck and RoI head on those SAME RoIs. The teacher's RPN
  never runs: it must not choose the RoIs the student is taught on.

This is the only kdplug module that imports mmdet.
"""
import copy
from typing import Dict, List, NamedTuple, Optional

import torch
from mmengine.config import ConfigDict
from torch import Tensor, nn

from .config import model_config

SCOPE = 'mmdet'
DEFAULT_DATA_PREPROCESSOR = 'mmdet.DetDataPreprocessor'


class RoIOutputs(NamedTuple):
    """The student's own losses and what the distillation needs from the same forward pass."""
    losses: Dict[str, Tensor]   # mmdet's keys: loss_rpn_cls, loss_rpn_bbox, loss_cls, loss_bbox, acc (, loss_mask)
    rois: Tensor                # (N, 5): batch index, x1, y1, x2, y2 of every sampled RoI of the batch
    cls_score: Tensor           # (N, C + 1) student logits, background last
    labels: Tensor              # (N,) sampled labels, background = C


def build_detector(cfg: dict) -> nn.Module:
    """Build a detector from mmdet's registry, whatever the default scope of the run (see stack.md: after
    mmpretrain's registration an unscoped FasterRCNN is looked up in the wrong registry)."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    cfg = ConfigDict(model_config(cfg))  # mmdet reads train_cfg.rpn etc. as attributes
    with DefaultScope.overwrite_default_scope(SCOPE):
        return MODELS.build(cfg)


def data_preprocessor_config(data_preprocessor: Optional[dict], student_cfg: dict) -> dict:
    """The distiller's data preprocessor: the run's (or the student's), as an mmdet DetDataPreprocessor, scoped so
    that it builds under any default scope."""
    cfg = copy.deepcopy(dict(data_preprocessor or student_cfg.get('data_preprocessor') or {}))
    cfg.setdefault('type', DEFAULT_DATA_PREPROCESSOR)
    if isinstance(cfg['type'], str) and '.' not in cfg['type']:
        cfg['type'] = f'{SCOPE}.{cfg["type"]}'
    return cfg


def roi_head(detector: nn.Module, role: str) -> nn.Module:
    """The detector's RoI head, checked: kdplug re-implements ``StandardRoIHead.loss`` to keep the sampled RoIs,
    so a head that overrides ``loss`` or ``bbox_loss`` (Cascade, Dynamic, PISA, Grid...) would silently lose its
    own behaviour. Refuse it rather than train something else than the config says."""
    from mmdet.models.roi_heads import StandardRoIHead
    head = getattr(detector, 'roi_head', None)
    if head is None or not hasattr(detector, 'extract_feat'):
        raise TypeError(f'the {role} ({type(detector).__name__}) is not a two-stage detector with a roi_head: '
                        'kdplug.RoIHeadDistiller distils the RoI classification head of e.g. FasterRCNN')
    if not isinstance(head, StandardRoIHead) or not head.with_bbox:
        raise NotImplementedError(
            f'the {role}\'s RoI head is a {type(head).__name__}: kdplug.RoIHeadDistiller supports StandardRoIHead '
            '(Faster / Mask R-CNN) with a bbox head. Multi-stage heads (CascadeRoIHead) need the stage to distil '
            'chosen: see docs/detection.md')
    if role == 'student':
        overridden = [name for name in ('loss', 'bbox_loss')
                      if getattr(type(head), name) is not getattr(StandardRoIHead, name)]
        if overridden:
            raise NotImplementedError(
                f'the student\'s RoI head {type(head).__name__} overrides StandardRoIHead.{"/".join(overridden)}: '
                'kdplug.RoIHeadDistiller runs StandardRoIHead\'s training steps and would drop that behaviour')
    return head


def num_classes(detector: nn.Module) -> Optional[int]:
    """Foreground classes of the RoI box head (its logits have one more column: background)."""
    bbox_head = getattr(getattr(detector, 'roi_head', None), 'bbox_head', None)
    if isinstance(bbox_head, nn.ModuleList):  # multi-stage heads: every stage predicts the same classes
        bbox_head = bbox_head[-1]
    return getattr(bbox_head, 'num_classes', None)


def check_same_preprocessing(preprocessor: nn.Module, detector: nn.Module, role: str) -> None:
    """The teacher scores the student's preprocessed images: a teacher trained with another normalisation (e.g.
    caffe-style mean/std, BGR) would score images it never saw. Compare with the detector's own preprocessor."""
    own = getattr(detector, 'data_preprocessor', None)
    if own is None:
        return

    def summary(module: nn.Module) -> tuple:
        mean, std = getattr(module, 'mean', None), getattr(module, 'std', None)
        return (bool(getattr(module, '_enable_normalize', False)),
                None if mean is None else [round(v, 4) for v in mean.flatten().tolist()],
                None if std is None else [round(v, 4) for v in std.flatten().tolist()],
                bool(getattr(module, '_channel_conversion', False)))

    ours, theirs = summary(preprocessor), summary(own)
    if ours != theirs:
        raise ValueError(
            f'the {role} was configured with another image preprocessing than the distiller\'s (normalize, mean, '
            f'std, bgr_to_rgb): {theirs} vs {ours}. Both models see the same preprocessed batch, so their '
            'data_preprocessor settings must agree (e.g. a caffe-style teacher needs a caffe-style student)')


def check_autocast(device_type: str) -> None:
    """mmcv's RoIAlign has no bfloat16 kernel (CPU or CUDA): say so, with the fix, before mmcv fails deep inside."""
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        raise RuntimeError(
            'RoI-head distillation under bfloat16 autocast: mmcv\'s RoIAlign has no bfloat16 kernel. Use float16 '
            "mixed precision: optim_wrapper=dict(type='AmpOptimWrapper', dtype='float16', ...)")


def _rpn_proposals(detector: nn.Module, x: tuple, data_samples: List) -> tuple:
    """RPN losses and proposals, as mmdet's ``TwoStageDetector.loss`` computes them (class-agnostic RPN targets)."""
    if not detector.with_rpn:
        return {}, [sample.proposals for sample in data_samples]
    proposal_cfg = detector.train_cfg.get('rpn_proposal', detector.test_cfg.rpn)
    rpn_data_samples = copy.deepcopy(data_samples)
    for sample in rpn_data_samples:
        sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)
    rpn_losses, proposals = detector.rpn_head.loss_and_predict(x, rpn_data_samples, proposal_cfg=proposal_cfg)
    for key in list(rpn_losses):  # mmdet's renaming: no clash with the RoI head's loss_cls / loss_bbox
        if 'loss' in key and 'rpn' not in key:
            rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
    return rpn_losses, proposals


def student_rois_and_losses(detector: nn.Module, inputs: Tensor, data_samples: List) -> RoIOutputs:
    """One training forward of a two-stage detector: its own losses (mmdet's keys and values) and the sampled
    RoIs with their logits and labels (the steps of ``StandardRoIHead.loss`` / ``bbox_loss``, unchanged)."""
    from mmdet.models.utils import unpack_gt_instances
    from mmdet.structures.bbox import bbox2roi
    head = detector.roi_head  # checked when the distiller was built (roi_head())
    x = detector.extract_feat(inputs)
    losses, proposals = _rpn_proposals(detector, x, data_samples)

    gt_instances, gt_instances_ignore, _ = unpack_gt_instances(data_samples)
    sampling_results = []
    for i, rpn_results in enumerate(proposals):
        rpn_results.priors = rpn_results.pop('bboxes')
        assign_result = head.bbox_assigner.assign(rpn_results, gt_instances[i], gt_instances_ignore[i])
        sampling_results.append(head.bbox_sampler.sample(assign_result, rpn_results, gt_instances[i],
                                                         feats=[level[i][None] for level in x]))

    rois = bbox2roi([result.priors for result in sampling_results])
    bbox_results = head._bbox_forward(x, rois)
    loss_and_target = head.bbox_head.loss_and_target(
        cls_score=bbox_results['cls_score'], bbox_pred=bbox_results['bbox_pred'], rois=rois,
        sampling_results=sampling_results, rcnn_train_cfg=head.train_cfg)
    losses.update(loss_and_target['loss_bbox'])
    if head.with_mask:
        mask_results = head.mask_loss(x, sampling_results, bbox_results['bbox_feats'], gt_instances)
        losses.update(mask_results['loss_mask'])
    labels = loss_and_target['bbox_targets'][0]
    return RoIOutputs(losses, rois, bbox_results['cls_score'], labels)


def teacher_cls_scores(teacher: nn.Module, inputs: Tensor, rois: Tensor) -> Tensor:
    """The teacher's RoI classification logits (N, C + 1) on the given RoIs: its backbone, neck and RoI head, never
    its RPN. Call under ``torch.no_grad()``."""
    feats = teacher.extract_feat(inputs)
    return teacher.roi_head._bbox_forward(feats, rois)['cls_score']


def predict(detector: nn.Module, inputs: Tensor, data_samples: Optional[List]) -> List:
    return detector.predict(inputs, data_samples)
