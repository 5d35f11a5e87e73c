"""Student-side modules: layers a distillation method inserts INTO the student (letKD's KD layer...).

A student-side module (contributed through the plugin hook ``kdplug_student_modules``) is an ``nn.Module`` with
``forward(feature) -> feature`` of the same shape; it is part of the student, so it is trained with it, saved in its
checkpoints, exported with it and runs at inference. The config puts it at a named position of an mmpretrain
backbone by wrapping the backbone::

    student=dict(
        type='ImageClassifier',
        backbone=dict(
            type='kdplug.BackboneWithModules',
            backbone=dict(type='kdplug.ResNet20'),                     # any mmpretrain / kdplug backbone
            modules=dict(
                layer2=dict(type='kdplug.LetKDLayer', in_channels=32, num_codewords=800),    # inside the backbone
                out=dict(type='kdplug.LetKDLayer', in_channels=64, num_codewords=4096))),    # on its output
        neck=..., head=...)

Positions (the keys of ``modules``):

* the name of a submodule of the backbone (``named_modules()``: ``'layer2'``, ``'block2'``, ``'stages.2'``...): the
  module transforms that submodule's output, inside the backbone (the next stages see the new feature); done with a
  forward hook, so the backbone class is untouched;
* ``'out'``: the last feature the backbone returns (for the CIFAR WideResNets, after their final BN-ReLU, the
  penultimate feature the paper's nets pool).

The training losses of a student-side module are ordinary losses of ``kdplug.Distiller`` (told apart from logit
losses by their ``student_module`` attribute), contributed through ``kdplug_student_modules`` with the module, that
name the module they supervise. The contract of such a loss (duck-typed: any loss with a ``student_module``
attribute is one):

* ``student_module``: the position of the module it supervises in the student;
* ``teacher_stage``: the position of the teacher feature it needs (``'out'`` or a submodule name of the teacher's
  backbone);
* ``forward(module, teacher_feature, target)``: ``module`` is the student-side module after the student's forward
  (it keeps what the loss needs, e.g. ``assignment_logits``), ``teacher_feature`` the teacher's feature map (no
  gradient), ``target`` the images' labels (N,) or soft labels (N, C), None where the task has none. Returns a
  scalar (already weighted), or a dict with the loss under ``'loss'`` and diagnostics (logged, never summed) under
  other keys.

The wrapper's weights are ``backbone.*`` (the wrapped backbone) and ``inserted.<position>.*`` (the modules; a
position's dots become ``__``). A student with inserted modules is exported and loaded like any other student, with
the same student config (it names ``kdplug.BackboneWithModules``, so loading it needs kdplug installed).
"""
from typing import Dict, Mapping, Optional, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn

#: The position of the backbone's (last) output.
OUT = 'out'


def _key(position: str) -> str:
    return position.replace('.', '__')


class _ApplyAfter:
    """Forward hook replacing a submodule's output by ``module(output)``; an object (not a closure), so that a deep
    copy of the model hooks the copy's module."""

    def __init__(self, module: nn.Module, position: str) -> None:
        self.module, self.position = module, position

    def __call__(self, _submodule: nn.Module, _args, output):
        if not isinstance(output, Tensor):
            raise TypeError(f'the student module at {self.position!r} expects a tensor output, got '
                            f'{type(output).__name__}: pick a submodule that returns one feature map')
        return self.module(output)


def build_backbone(cfg: dict) -> nn.Module:
    """A backbone from mmengine's root registry, in the run's default scope (``'kdplug.ResNet20'`` or, in
    mmpretrain's scope, ``'ResNet'``)."""
    from mmengine.registry import MODELS
    return MODELS.build(dict(cfg))


def submodule_names(module: nn.Module, depth: int = 1) -> list:
    return [name for name, _ in module.named_modules() if name and name.count('.') < depth]


class BackboneWithModules(BaseModule):
    """A backbone with student-side modules inserted at named positions (see the module docstring).

    Args:
        backbone: the config of the backbone to wrap.
        modules: position -> config of a student-side module (built from ``kdplug.registry.MODELS``).
    """

    def __init__(self, backbone: dict, modules: Mapping[str, dict], init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        from kdplug.registry import MODELS
        if not modules:
            raise ValueError('BackboneWithModules needs at least one module, e.g. modules=dict(out=dict('
                             'type="LetKDLayer", in_channels=64, num_codewords=4096))')
        self.backbone = build_backbone(backbone) if isinstance(backbone, Mapping) else backbone
        self.inserted = nn.ModuleDict()
        self.positions: Tuple[str, ...] = tuple(modules)
        named = dict(self.backbone.named_modules())
        for position, cfg in modules.items():
            module = MODELS.build(cfg) if isinstance(cfg, Mapping) else cfg
            self.inserted[_key(position)] = module
            if position == OUT:
                continue
            if not position or position not in named:
                raise ValueError(f'BackboneWithModules: {type(self.backbone).__name__} has no submodule {position!r}; '
                               f'positions are "{OUT}" (its output) or one of its submodules, e.g. '
                               f'{", ".join(submodule_names(self.backbone))}')
            named[position].register_forward_hook(_ApplyAfter(module, position))

    def module_at(self, position: str) -> nn.Module:
        return self.inserted[_key(position)]

    @property
    def out_channels(self):
        return getattr(self.backbone, 'out_channels')

    def forward(self, x: Tensor):
        outs = self.backbone(x)
        if OUT not in self.positions:
            return outs
        if isinstance(outs, Tensor):
            return self.module_at(OUT)(outs)
        outs = list(outs)
        outs[-1] = self.module_at(OUT)(outs[-1])
        return tuple(outs)


def student_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """Every student-side module inserted in ``model`` (through :class:`BackboneWithModules`), by position."""
    found: Dict[str, nn.Module] = {}
    for wrapper in model.modules():
        if isinstance(wrapper, BackboneWithModules):
            for position in wrapper.positions:
                if position in found:
                    raise ValueError(f'two student-side modules at the position {position!r}')
                found[position] = wrapper.module_at(position)
    return found
