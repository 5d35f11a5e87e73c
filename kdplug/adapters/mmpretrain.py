"""mmpretrain classifiers (``ImageClassifier`` and any classifier with ``extract_feat`` and a ``ClsHead``)."""
import copy
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .config import model_config

SCOPE = 'mmpretrain'
DEFAULT_DATA_PREPROCESSOR = 'mmpretrain.ClsDataPreprocessor'


def build_classifier(cfg: dict) -> nn.Module:
    """Build a classifier from mmpretrain's registry, whatever the default scope of the run."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = model_config(cfg)
    with DefaultScope.overwrite_default_scope(SCOPE):
        return MODELS.build(cfg)


def logits(classifier: nn.Module, inputs: Tensor) -> Tensor:
    """Classification logits (N, C) of a preprocessed batch."""
    return classifier.head(classifier.extract_feat(inputs))


def logits_and_losses(classifier: nn.Module, inputs: Tensor, data_samples: List) -> Tuple[Tensor, Dict]:
    """The student's logits and its own losses, from one forward pass (head.loss would run the head again)."""
    cls_score = logits(classifier, inputs)
    return cls_score, classifier.head._get_loss(cls_score, data_samples)


def split_views(inputs) -> List[Tensor]:
    """The views of a batch: one (N, C, H, W) tensor is one view; a MultiView pipeline (mmpretrain's ``MultiView``
    before ``PackInputs``, default_collate, then ``SelfSupDataPreprocessor``) gives a list of them, one per view."""
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


def views_logits_and_losses(classifier: nn.Module, views: List[Tensor], data_samples: List) -> Tuple[Tensor, Dict]:
    """The logits of every view stacked along the batch, (V N, C), view after view, and the student's own losses
    summed over the views (e.g. w_ce (CE(weak) + CE(strong)) for MLKD). One forward per view, as separate batches
    (BatchNorm statistics per view); keys without "loss" (e.g. accuracy) come from the first view."""
    scores, losses = [], {}
    for view in views:
        cls_score = logits(classifier, view)
        scores.append(cls_score)
        for key, value in classifier.head._get_loss(cls_score, data_samples).items():
            losses[key] = losses[key] + value if key in losses and 'loss' in key else losses.get(key, value)
    return torch.cat(scores), losses


def targets(data_samples: List) -> Tensor:
    """Hard labels (N,), or the soft labels (N, C) that mixup / cutmix leave in ``gt_score``."""
    if 'gt_score' in data_samples[0]:
        return torch.stack([sample.gt_score for sample in data_samples])
    return torch.cat([sample.gt_label for sample in data_samples])


def num_classes(classifier: nn.Module) -> Optional[int]:
    return getattr(getattr(classifier, 'head', None), 'num_classes', None)


def data_preprocessor_config(data_preprocessor: Optional[dict], student_cfg: dict) -> dict:
    """The distiller's data preprocessor: the run's (or the student's, also from its ``cfg_path``), as a mmpretrain
    ClsDataPreprocessor with the student's batch augments (mixup / cutmix)."""
    student_cfg = model_config(student_cfg)
    cfg = copy.deepcopy(dict(data_preprocessor or student_cfg.get('data_preprocessor') or {}))
    cfg.setdefault('type', DEFAULT_DATA_PREPROCESSOR)
    if cfg['type'] == 'ClsDataPreprocessor':
        cfg['type'] = DEFAULT_DATA_PREPROCESSOR
    if student_cfg.get('train_cfg'):
        if str(cfg['type']).endswith('SelfSupDataPreprocessor'):
            raise ValueError(f"{cfg['type']} (a MultiView pipeline's) takes no batch augments: drop the student's "
                             'train_cfg (mixup / cutmix), or use one view and ClsDataPreprocessor')
        cfg.setdefault('batch_augments', student_cfg['train_cfg'])
    return cfg


def with_out_indices(cfg: dict, extra_stage: int) -> dict:
    """The classifier config with its backbone also returning stage ``extra_stage`` (before the last one)."""
    cfg = model_config(cfg)
    backbone = cfg['backbone']
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope(SCOPE):
        probe = MODELS.build(copy.deepcopy(backbone))
    num_stages = len(probe.out_channels) if hasattr(probe, 'out_channels') else getattr(probe, 'num_stages', 4)
    last = num_stages - 1
    stage = extra_stage % num_stages
    if stage == last:
        raise ValueError(f'the extra stage {extra_stage} is the last stage of the backbone: pick a middle one')
    backbone['out_indices'] = (stage, last)
    return cfg


@torch.no_grad()
def feature_channels(classifier: nn.Module, size: int = 64) -> List[int]:
    """Channels of each feature the classifier's backbone (+ neck) returns, from one probe forward in eval mode."""
    was_training = classifier.training
    classifier.eval()
    try:
        feats = classifier.extract_feat(torch.zeros(1, 3, size, size))
    finally:
        classifier.train(was_training)
    return [f.shape[1] for f in feats]
