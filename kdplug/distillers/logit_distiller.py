"""LogitDistiller: distil an mmpretrain classifier from a frozen teacher with any of kdplug's logit losses.

    model = dict(
        type='kdplug.LogitDistiller',
        student=dict(type='ImageClassifier', ...),      # or dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py')
        teacher=dict(type='ImageClassifier', ...),
        teacher_ckpt='work_dirs/teacher/epoch_240.pth',  # local path or URL, loaded with weights_only=True
        losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)))

The student's own losses (its head's, e.g. cross-entropy with the paper's w_ce as ``loss_weight``) are logged as
``student.*``, each distillation loss as ``distill.loss_<name>``. Prediction and export use the student only.
"""
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from .base import DistillerBase
from .teacher import check_num_classes, load_teacher_weights


class ClassifierDistiller(DistillerBase):
    """A classifier student distilled from ``self.teacher``, whatever made the teacher (loaded or EMA).

    A batch of a MultiView pipeline (a list of (N, C, H, W) tensors, one per view) goes to losses that take the
    views (``views = 2``, MLKD) as (V N, C) logits, view after view: the student runs once per view and its own
    losses are summed over the views (w_ce (CE(weak) + CE(strong))), the teacher runs once on all the views.
    """

    max_views = 2

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        from kdplug.adapters import mmpretrain as adapter
        views = adapter.split_views(inputs)
        self.check_views(len(views))
        if len(views) == 1:
            student_logits, student_losses = adapter.logits_and_losses(self.student, views[0], data_samples)
        else:
            student_logits, student_losses = adapter.views_logits_and_losses(self.student, views, data_samples)
        with torch.no_grad():
            teacher_logits = adapter.logits(self.teacher, views[0] if len(views) == 1 else torch.cat(views))
        losses = self.prefixed(student_losses, 'student')
        target = adapter.targets(data_samples)
        target = target if len(views) == 1 else torch.cat([target] * len(views))
        losses.update(self.distill_losses(student_logits, teacher_logits, target, views=len(views)))
        return losses

    def predict(self, inputs: Tensor, data_samples: Optional[List] = None) -> List:
        model = self.teacher if self._predict_with_teacher else self.student
        return model.predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[List] = None) -> Tensor:
        from kdplug.adapters import mmpretrain as adapter
        return adapter.logits(self.student, inputs)


class LogitDistiller(ClassifierDistiller):

    def __init__(self, student: dict, teacher: dict, teacher_ckpt: Optional[str], losses: Mapping[str, dict],
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        from kdplug.adapters import mmpretrain as adapter
        super().__init__(losses=losses, data_preprocessor=adapter.data_preprocessor_config(data_preprocessor, student),
                         init_cfg=init_cfg)
        self.student = adapter.build_classifier(student)
        if not teacher_ckpt:
            raise ValueError('teacher_ckpt is missing: a teacher with random weights teaches nothing. Train the '
                             'teacher first (configs/teachers/) and set teacher_ckpt to its checkpoint')
        teacher_model = adapter.build_classifier(teacher)
        check_num_classes(adapter.num_classes(self.student), adapter.num_classes(teacher_model))
        load_teacher_weights(teacher_model, teacher_ckpt)
        self.set_teacher(teacher_model, f'the teacher ({teacher_ckpt})')
