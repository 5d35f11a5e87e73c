"""FeatureDistiller: a LogitDistiller that also trains student-side modules (letKD's KD layer...) from the teacher's
features at named stages::

    model = dict(
        type='kdplug.FeatureDistiller',
        student=dict(type='ImageClassifier',
                     backbone=dict(type='kdplug.BackboneWithModules', backbone=dict(type='kdplug.ResNet20'),
                                   modules=dict(out=dict(type='kdplug.LetKDLayer', in_channels=64,
                                                         num_codewords=4096))),
                     neck=..., head=...),
        teacher=dict(type='ImageClassifier', ...), teacher_ckpt='...',
        losses=dict(
            letkd=dict(type='LetKDLoss', student_module='out', level='penultimate', codewords='codewords.pth'),
            kd=dict(type='KDLoss', temperature=4.0)))        # logit losses may be mixed in

``losses`` holds two kinds of losses, told apart by a ``student_module`` attribute:

* **student-module losses** (:class:`kdplug.models.student_modules.StudentModuleLoss`): called as
  ``loss(module, teacher_feature, target)`` with the student-side module at ``loss.student_module`` (after the
  student's forward) and the teacher's feature map at ``loss.teacher_stage`` (``'out'``: the last output of the
  teacher's backbone; else a submodule of it, read with a forward hook), computed without gradient;
* **logit losses**, as in :class:`LogitDistiller`: ``loss(student_logits, teacher_logits, target)``; the teacher's
  head only runs when there is one.

Each is logged as ``distill.loss_<name>`` (times ``loss_scales[name]``, so ``LossWarmupHook`` ramps both kinds); a
student-module loss that returns a dict adds its other entries as diagnostics ``distill.<name>_<key>`` (not summed).
The teacher, prediction and export are as in LogitDistiller: the student-side modules are part of the student.
"""
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .logit_distiller import LogitDistiller


def is_module_loss(loss: nn.Module) -> bool:
    return isinstance(getattr(loss, 'student_module', None), str)


def stage_features(classifier: nn.Module, inputs: Tensor, stages: Iterable[str], with_logits: bool
                   ) -> Tuple[Dict[str, Tensor], Optional[Tensor]]:
    """The feature maps of ``classifier`` at ``stages`` (``'out'`` or submodule names of its backbone) and, with
    ``with_logits``, its logits, from one forward pass."""
    from kdplug.models.student_modules import OUT
    stages = set(stages)
    named = dict(classifier.backbone.named_modules())
    captured: Dict[str, Tensor] = {}
    handles = []
    for stage in stages - {OUT}:
        handles.append(named[stage].register_forward_hook(
            lambda _module, _args, output, stage=stage: captured.__setitem__(stage, output)))
    try:
        feats = classifier.backbone(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if OUT in stages:
        captured[OUT] = feats if isinstance(feats, Tensor) else feats[-1]
    logits = None
    if with_logits:
        neck = getattr(classifier, 'neck', None)
        logits = classifier.head(neck(feats) if neck is not None else feats)
    return captured, logits


class FeatureDistiller(LogitDistiller):

    max_views = 1  # its loss step feeds the logit losses one view (LogitDistiller's two-view path is not used)

    def __init__(self, student: dict, teacher: dict, teacher_ckpt: Optional[str], losses: Mapping[str, dict],
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(student=student, teacher=teacher, teacher_ckpt=teacher_ckpt, losses=losses,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from kdplug.models.student_modules import OUT, student_modules, submodule_names
        modules = student_modules(self.student)
        teacher_named = dict(self.teacher.backbone.named_modules())
        self.module_losses: Tuple[str, ...] = tuple(n for n, loss in self.losses.items() if is_module_loss(loss))
        for name in self.module_losses:
            loss = self.losses[name]
            if loss.student_module not in modules:
                raise ValueError(
                    f'loss {name!r} trains the student module at {loss.student_module!r}, but the student has '
                    f'{"modules at " + ", ".join(map(repr, modules)) if modules else "no student-side modules"}. '
                    'Insert it with backbone=dict(type="kdplug.BackboneWithModules", backbone=..., '
                    f'modules=dict({loss.student_module}=dict(type=...)))')
            stage = loss.teacher_stage
            if stage != OUT and (not stage or stage not in teacher_named):
                raise ValueError(f'loss {name!r}: the teacher\'s backbone has no stage {stage!r}; stages are '
                                 f'"{OUT}" or its submodules, e.g. {", ".join(submodule_names(self.teacher.backbone))}')
        if any('loss' in name for name in self.module_losses):
            bad = [name for name in self.module_losses if 'loss' in name]
            raise ValueError(f'rename the losses {bad}: a student-module loss\'s diagnostics are logged as '
                             '"distill.<name>_<key>", and mmengine would sum every key containing "loss"')

    def teacher_stages(self) -> List[str]:
        return sorted({self.losses[name].teacher_stage for name in self.module_losses})

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        from kdplug.adapters import mmpretrain as adapter
        from kdplug.models.student_modules import student_modules
        student_logits, student_losses = adapter.logits_and_losses(self.student, inputs, data_samples)
        target = adapter.targets(data_samples)
        with_logits = len(self.module_losses) < len(self.losses)
        with torch.no_grad():
            teacher_feats, teacher_logits = stage_features(self.teacher, inputs, self.teacher_stages(), with_logits)
        modules = student_modules(self.student)
        losses = self.prefixed(student_losses, 'student')
        if with_logits:
            logit_losses = [name for name in self.losses if name not in self.module_losses]
            losses.update(self.distill_losses(student_logits, teacher_logits, target, names=logit_losses))
        for name in self.module_losses:
            loss, scale = self.losses[name], self.loss_scales[name]
            out = loss(modules[loss.student_module], teacher_feats[loss.teacher_stage], target)
            if not isinstance(out, Mapping):
                out = {'loss': out}
            losses[f'distill.loss_{name}'] = scale * out['loss']
            for key, value in out.items():
                if key != 'loss':
                    losses[f'distill.{name}_{key}'] = value.detach() if isinstance(value, Tensor) else value
        return losses
