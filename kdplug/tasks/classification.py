"""Classification with mmpretrain classifiers (``ImageClassifier`` and any classifier with ``extract_feat`` and a
``ClsHead``): one row of logits per image, its label (or the soft label mixup / cutmix leave) as the target::

    model = dict(type='kdplug.Distiller', task=dict(type='ClassificationTask'), student=..., teacher=..., losses=...)

A batch of a MultiView pipeline (mmpretrain's ``MultiView`` before ``PackInputs``, default_collate, then
``SelfSupDataPreprocessor``: a list of (N, C, H, W) tensors, one per view) is distilled view after view, (V N, C)
rows: the student runs once per view (BatchNorm statistics per view) with its own losses summed over the views
(w_ce (CE(weak) + CE(strong)) for MLKD), the teacher once on all the views.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .base import LogitRows, StudentOutput, Task



def split_views(inputs: Any) -> List[Tensor]:
    """The views of a batch: one (N, C, H, W) tensor is one view; a MultiView pipeline gives a list of them."""
    if isinstance(inputs, Tensor):
        if inputs.dim() == 5:
            raise ValueError(
                f'a batch of shape {tuple(inputs.shape)}: mmpretrain\'s ClsDataPreprocessor stacks the views of a '
                'MultiView pipeline into one tensor (and its to_rgb looks at the wrong axis). Give such a pipeline '
                "data_preprocessor=dict(type='mmpretrain.SelfSupDataPreprocessor', mean=..., std=..., to_rgb=...), "
                'as configs/_base_/datasets/*_multiview.py do')
        return [inputs]
    views = list(inputs)
    if not views or not all(isinstance(v, Tensor) and v.dim() == 4 and v.shape[0] == views[0].shape[0]
                            for v in views):
        shapes = [tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for v in views]
        raise ValueError(f'expected one (N, C, H, W) tensor per view of a MultiView batch (default_collate), got '
                         f'{shapes}')
    return views


def targets(data_samples: List) -> Tensor:
    """Hard labels (N,), or the soft labels (N, C) that mixup / cutmix leave in ``gt_score``."""
    if 'gt_score' in data_samples[0]:
        return torch.stack([sample.gt_score for sample in data_samples])
    return torch.cat([sample.gt_label for sample in data_samples])


class ClassificationTask(Task):
    """mmpretrain classifiers; no options."""

    scope = 'mmpretrain'
    default_data_preprocessor = 'ClsDataPreprocessor'
    max_views = 2
    image_rows = True  # one row per image: the classifier's logits

    def data_preprocessor(self, data_preprocessor: Optional[dict], student_cfg: dict) -> dict:
        """The run's (or the student's) preprocessor, as mmpretrain's ClsDataPreprocessor with the student's batch
        augments (mixup / cutmix, its ``train_cfg``)."""
        cfg = super().data_preprocessor(data_preprocessor, student_cfg)
        if student_cfg.get('train_cfg'):
            if str(cfg['type']).endswith('SelfSupDataPreprocessor'):
                raise ValueError(f"{cfg['type']} (a MultiView pipeline's) takes no batch augments: drop the "
                                 "student's train_cfg (mixup / cutmix), or use one view and ClsDataPreprocessor")
            cfg.setdefault('batch_augments', student_cfg['train_cfg'])
        return cfg

    def inference_data_preprocessor(self, cfg: dict) -> dict:
        """mmpretrain's ClsDataPreprocessor with the normalisation of a MultiView run's SelfSupDataPreprocessor
        (which stacks views and takes no batch augments: mmpretrain's inferencer and test tool failed on it), or
        the run's own without its batch augments (mixup / cutmix train, never infer)."""
        cfg = {key: value for key, value in cfg.items() if key != 'batch_augments'}
        if str(cfg.get('type')).endswith('SelfSupDataPreprocessor'):
            kept = {key: cfg[key] for key in ('mean', 'std', 'to_rgb', 'pad_value') if key in cfg}
            cfg = dict(type=f'{self.scope}.{self.default_data_preprocessor}', **kept)
        return cfg

    def num_classes(self, model: nn.Module) -> Optional[int]:
        return getattr(getattr(model, 'head', None), 'num_classes', None)

    def check_dataset(self, dataset: Any, student: nn.Module) -> None:
        """Every label of an mmpretrain dataset (``get_gt_labels``) in [0, C) of the student's head: torch's
        cross-entropy stopped at some step with "Target 12 is out of bounds", without the image or the fix.
        Multi-label datasets and dataset wrappers without ``get_gt_labels`` are not checked."""
        classes = self.num_classes(student)
        if classes is None or not callable(getattr(dataset, 'get_gt_labels', None)):
            return
        labels = np.asarray(dataset.get_gt_labels())
        if labels.ndim != 1 or labels.dtype.kind not in 'iu':
            return
        outside = np.flatnonzero((labels < 0) | (labels >= classes))
        if outside.size:
            first = int(outside[0])
            info = dataset.get_data_info(first) if callable(getattr(dataset, 'get_data_info', None)) else {}
            raise ValueError(f'{outside.size} training samples have a label outside the {classes} classes of the '
                             f'student\'s head (0..{classes - 1}), e.g. sample {first} '
                             f'({info.get("img_path", "no file")}) labelled {int(labels[first])}: fix the annotation '
                             'file, or set num_classes of the heads (student and teacher) to the dataset\'s')

    @staticmethod
    def logits(classifier: nn.Module, inputs: Tensor) -> Tensor:
        """Classification logits (N, C) of a preprocessed batch."""
        return classifier.head(classifier.extract_feat(inputs))

    def _logits_and_losses(self, classifier: nn.Module, inputs: Tensor, data_samples: List) -> Tuple[Tensor, Dict]:
        """Logits and the head's own losses from one forward (``head.loss`` would run the head again)."""
        cls_score = self.logits(classifier, inputs)
        return cls_score, classifier.head._get_loss(cls_score, data_samples)

    def student_forward(self, student: nn.Module, inputs: Any, data_samples: List,
                        positions: Sequence[str] = ()) -> StudentOutput:
        views = split_views(inputs)
        if positions and len(views) > 1:
            raise ValueError(f'features at {sorted(positions)} are recorded from one view of each image (feature-'
                             'level methods, USKD\'s weak head), but the batch brings '
                             f'{len(views)}: remove the MultiView transform from the training pipeline (and its '
                             "SelfSupDataPreprocessor: a *_multiview.py dataset base is MLKD's)")
        losses: Dict[str, Tensor] = {}
        scores = []
        with self.recording(student, positions) as feats:
            for view in views:
                cls_score, view_losses = self._logits_and_losses(student, view, data_samples)
                scores.append(cls_score)
                for key, value in view_losses.items():  # keys without "loss" (accuracy) from the first view
                    losses[key] = losses[key] + value if key in losses and 'loss' in key else losses.get(key, value)
        target = self.image_targets(data_samples)
        rows = LogitRows(logits=torch.cat(scores) if len(scores) > 1 else scores[0],
                         target=torch.cat([target] * len(views)) if len(views) > 1 else target)
        return StudentOutput(losses=losses, rows=[rows], target=target, features=dict(feats), views=len(views))

    def teacher_logits(self, teacher: nn.Module, inputs: Any, data_samples: List,
                       student: StudentOutput) -> List[Tensor]:
        views = split_views(inputs)
        return [self.logits(teacher, views[0] if len(views) == 1 else torch.cat(views))]

    def image_targets(self, data_samples: List) -> Tensor:
        return targets(data_samples)

    @staticmethod
    def first_view(inputs: Any) -> Tensor:
        return split_views(inputs)[0]

    def tensor_forward(self, model: nn.Module, inputs: Any, data_samples: Optional[List]) -> Tensor:
        return self.logits(model, inputs)
