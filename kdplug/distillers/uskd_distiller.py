"""USKD self-distillation (Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
Approach with Normalized Loss and Customized Soft Labels", ICCV 2023, arXiv:2303.13005): no teacher; a weak linear
head on the student's middle stage supplies the ranking of the non-target soft labels (see kdplug/losses/uskd.py).

    model = dict(
        type='kdplug.USKDDistiller',
        student=dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18), ...),
        weak_stage=2,          # the backbone stage whose pooled feature feeds the weak head
        losses=dict(uskd=dict(type='USKDLoss', alpha=1.0, beta=0.1, mu=0.005)))

The student's backbone is asked for ``out_indices=(weak_stage, last)``; its neck pools both and its head uses the
last, so the student is unchanged. The weak head (``weak_head.*`` in checkpoints) is a training-only module:
the student export drops it. Its cross-entropy (weight mu) also trains the backbone up to the weak stage. Mixup /
cutmix soft labels (``gt_score``) reach the loss whole: it keeps their two largest entries, as the authors' code.
"""
from typing import Dict, List, Mapping, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .base import DistillerBase


class USKDDistiller(DistillerBase):

    def __init__(self, student: dict, losses: Mapping[str, dict], weak_stage: int = -2,
                 weak_channels: Optional[int] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        from kdplug.adapters import mmpretrain as adapter
        super().__init__(losses=losses, data_preprocessor=adapter.data_preprocessor_config(data_preprocessor, student),
                         init_cfg=init_cfg)
        self.student = adapter.build_classifier(adapter.with_out_indices(student, weak_stage))
        num_classes = adapter.num_classes(self.student)
        if num_classes is None:
            raise ValueError('USKDDistiller needs a student head with num_classes')
        channels = weak_channels or adapter.feature_channels(self.student)[0]
        self.weak_head = nn.Linear(channels, num_classes)

    def _weak_logits(self, feats) -> Tensor:
        weak = feats[0]
        if weak.dim() == 4:  # no pooling neck: pool here
            weak = F.adaptive_avg_pool2d(weak, 1).flatten(1)
        return self.weak_head(weak)

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        from kdplug.adapters import mmpretrain as adapter
        feats = self.student.extract_feat(inputs)
        logits = self.student.head(feats)
        losses = self.prefixed(self.student.head._get_loss(logits, data_samples), 'student')
        losses.update(self.distill_losses(logits, self._weak_logits(feats), adapter.targets(data_samples)))
        return losses

    def predict(self, inputs: Tensor, data_samples: Optional[List] = None) -> List:
        return self.student.predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[List] = None) -> Tensor:
        return self.student.head(self.student.extract_feat(inputs))
