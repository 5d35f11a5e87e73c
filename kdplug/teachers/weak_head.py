"""WeakHeadTeacher: no teacher network. The "teacher" logits come from a weak linear head on a middle stage of the
student itself, trained with it: USKD's self-distillation (Yang et al., "From Knowledge Distillation to
Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels", ICCV 2023,
arXiv:2303.13005; the head's own cross-entropy, weight mu, is part of ``USKDLoss``)::

    teacher=dict(type='WeakHeadTeacher', position='layer3')   # stage 3 of 4 of mmpretrain's ResNet

The feature at ``position`` (a submodule of the student's backbone, recorded with a forward hook: the student is
unchanged) is average-pooled and fed to ``Linear(in_channels, num_classes)``; ``in_channels`` defaults to the
channels of the last BatchNorm of that stage. The head (``teacher.head.*`` in checkpoints) trains with the student
and its gradient reaches the backbone up to that stage; the student export drops it. One row per image: a task
whose rows are images (classification).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from kdplug.tasks.base import OUT, StudentOutput, Task

from .base import TeacherSource


class WeakHeadTeacher(TeacherSource):

    description = 'the weak head'
    external = False  # the student's own head: its rows are not a teacher's

    def __init__(self, position: str, in_channels: Optional[int] = None) -> None:
        super().__init__()
        self.position, self.in_channels = position, in_channels
        self.student_positions = (position,)
        self.head: Optional[nn.Linear] = None

    def setup(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        task.check_positions(student, self.student_positions, 'student')
        stages = task.stages(student)
        if self.position == OUT or (stages and self.position == stages[-1]):
            raise ValueError(f'the weak head reads {self.position!r}, the last stage of the student\'s backbone, '
                             f'which its own head reads: pick a middle stage, e.g. {", ".join(stages[:-1])}')
        num_classes = task.num_classes(student)
        if num_classes is None:
            raise ValueError(f'{type(self).__name__} needs a student head with num_classes')
        stage_channels, channels = task.channels_at(student, self.position), self.in_channels
        if channels is None:
            if stage_channels is None:
                raise ValueError(f'the student\'s {self.position!r} has no BatchNorm to read its channels from: '
                                 f'give in_channels=')
            channels = stage_channels
        elif not isinstance(channels, int) or channels < 1 or (stage_channels is not None and
                                                               channels != stage_channels):
            raise ValueError(f'in_channels={channels!r}, but the student\'s {self.position!r} gives '
                             f'{stage_channels or "an unknown number of"} channels: leave in_channels out (it '
                             'is read from the stage) or give that number')
        self.head = nn.Linear(channels, num_classes)

    def teach(self, task: Task, inputs: Any, data_samples: List, student: StudentOutput,
              positions: Sequence[str] = (), with_logits: bool = True
              ) -> Tuple[Optional[List[Tensor]], Dict[str, Tensor]]:
        if positions:
            raise ValueError(f'{type(self).__name__} has no teacher network to give features at {sorted(positions)}')
        feature = student.features[self.position]
        rows = student.rows
        if len(rows) != 1 or rows[0].logits.shape[0] != feature.shape[0]:
            raise ValueError(f'{type(self).__name__} gives one row per image, but {type(task).__name__} distils '
                             'other rows: use it with a task whose rows are images (ClassificationTask)')
        if feature.dim() == 4:
            feature = F.adaptive_avg_pool2d(feature, 1).flatten(1)
        return [self.head(feature)], {}

    def extra_repr(self) -> str:
        return f'position={self.position!r}'
