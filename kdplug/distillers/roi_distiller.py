"""RoIHeadDistiller: distil the RoI classification head of an mmdet two-stage detector (Faster R-CNN) with any of
kdplug's logit losses.

    model = dict(
        type='kdplug.RoIHeadDistiller',
        student=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),   # or an inline detector
        teacher=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py'),
        teacher_ckpt='https://download.openmmlab.com/...',   # local path or URL, loaded with weights_only=True
        losses=dict(kd=dict(type='KDLoss', temperature=1.0)),
        background='include')                                 # or 'exclude', or a weight in [0, 1]

One step: the student's RPN proposes, its sampler picks the RoIs (about 512 per image, a quarter foreground), the
student scores them and computes its own losses exactly as mmdet does (logged ``student.*``). The teacher's
backbone, neck and RoI head then score the SAME RoIs without gradient (its RPN never runs: RoIs chosen by the
teacher would teach the student on boxes it never proposed). Each loss sees (N, C + 1) logits, background last, and
the sampled labels (background = C) as the target of losses that need one (DKD, NKD); it is logged
``distill.loss_<name>``, and the number of RoIs it was averaged over as ``distill.num_rois`` (no "loss" in the key:
mmengine would add it to the total).

Background RoIs (label C, about three quarters of the sampled ones), ``background=``:

* ``'include'`` (default): every RoI counts the same, the plain mean over RoIs (what mdistiller's detection
  recipe does). Where the teacher is confident the box is background, the student learns that too.
* ``'exclude'``: only foreground RoIs are distilled (weight 0 on background rows). A batch with no foreground RoI
  (images without boxes, an early RPN) then has nothing to distil: the loss is 0, still attached to the graph, and
  ``distill.num_rois`` is 0. That is the safe result, not an error.
* a float ``w`` in [0, 1]: background rows weigh ``w``, foreground rows 1; the loss is sum(w_i l_i) / sum(w_i).

'include' is the default until a measurement on COCO (GPU) chooses; losses from third-party plugins must accept
``weight=`` for the other two policies.
"""
from numbers import Real
from typing import Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor

from .base import DistillerBase
from .teacher import check_num_classes, load_teacher_weights

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


class RoIHeadDistiller(DistillerBase):
    """A student and a frozen teacher, both mmdet two-stage detectors; the student's RoIs, scored by both."""

    def __init__(self, student: dict, teacher: dict, teacher_ckpt: Optional[str], losses: Mapping[str, dict],
                 background: BackgroundPolicy = 'include', data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        from kdplug.adapters import mmdet as adapter
        student_cfg = adapter.model_config(student)
        super().__init__(losses=losses, data_preprocessor=adapter.data_preprocessor_config(data_preprocessor,
                                                                                           student_cfg),
                         init_cfg=init_cfg)
        self.background = check_background(background)
        unweighted = [name for name, takes in self._takes_weight.items() if not takes]
        if self.background != 'include' and unweighted:
            raise ValueError(f'background={self.background!r} weighs RoIs, but the losses {unweighted} take no row '
                             'weights: give their forward a weight=None argument (the loss contract, '
                             'docs/plugins.md) or use background="include"')
        self.student = adapter.build_detector(student_cfg)
        adapter.roi_head(self.student, 'student')
        if not teacher_ckpt:
            raise ValueError('teacher_ckpt is missing: a teacher with random weights teaches nothing. Train the '
                             'teacher first (configs/detection/teachers/) or use a released mmdet checkpoint, and '
                             'set teacher_ckpt to it')
        teacher_model = adapter.build_detector(teacher)
        adapter.roi_head(teacher_model, 'teacher')
        check_num_classes(adapter.num_classes(self.student), adapter.num_classes(teacher_model))
        adapter.check_same_preprocessing(self.data_preprocessor, self.student, 'student')
        adapter.check_same_preprocessing(self.data_preprocessor, teacher_model, 'teacher')
        load_teacher_weights(teacher_model, teacher_ckpt)
        self.set_teacher(teacher_model, f'the teacher ({teacher_ckpt})')

    @property
    def num_classes(self) -> int:
        from kdplug.adapters import mmdet as adapter
        return adapter.num_classes(self.student)

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        from kdplug.adapters import mmdet as adapter
        adapter.check_autocast(inputs.device.type)
        student = adapter.student_rois_and_losses(self.student, inputs, data_samples)
        with torch.no_grad():
            teacher_logits = adapter.teacher_cls_scores(self.teacher, inputs, student.rois)
        weight = background_weights(student.labels, self.num_classes, self.background)
        losses = self.prefixed(student.losses, 'student')
        losses.update(self.distill_losses(student.cls_score, teacher_logits, student.labels, weight=weight))
        # a diagnostic, kept on the device (no sync): RoIs that took part in the distillation losses
        losses['distill.num_rois'] = (student.labels.new_tensor(student.labels.numel()) if weight is None
                                      else (weight > 0).sum()).float()
        return losses

    def predict(self, inputs: Tensor, data_samples: Optional[List] = None) -> List:
        from kdplug.adapters import mmdet as adapter
        return adapter.predict(self.teacher if self._predict_with_teacher else self.student, inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[List] = None):
        return self.student._forward(inputs, data_samples)
