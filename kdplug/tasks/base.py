"""The contract of a downstream task: what :class:`kdplug.Distiller` asks of a model family, written down once.

A task knows one family of OpenMMLab models (mmpretrain classifiers, mmdet two-stage detectors, a plugin's
segmentors...) and nothing about losses or where the teacher comes from. The distiller calls, in this order:

* building: :meth:`Task.model_config` (a config given inline or by ``cfg_path``, resolved once),
  :meth:`Task.data_preprocessor` (the distiller's, with the student's batch augments), :meth:`Task.build_model`
  (in the task's own registry scope, whatever the run's default scope), :meth:`Task.check_pair` (a teacher that
  cannot teach this student: other classes, other input normalisation);
* a training step: :meth:`Task.student_forward` runs the student once and returns a :class:`StudentOutput`: its own
  losses, the rows of logits to distil (:class:`LogitRows`: targets, row weights, and what the teacher needs to
  score the same rows) and its features at the positions asked for; :meth:`Task.teacher_logits` scores those rows
  with a teacher model, in the same order;
* :meth:`Task.image_targets` and :meth:`Task.features` for methods that read features outside a training step (the
  offline fit of letKD's codewords);
* :meth:`Task.predict` and :meth:`Task.tensor_forward` for validation, test and ``mode='tensor'``.

Features at named positions (for feature-level methods) are recorded with forward hooks on the model's backbone
(:meth:`Task.recording`): a position is a submodule name of the backbone (``'layer3'``) or ``'out'`` (its last
output). A task whose models keep their backbone elsewhere overrides :meth:`Task.backbone`; one whose stages are
not the backbone's children with layers inside, or whose channels no BatchNorm gives, overrides
:meth:`Task.stages` / :meth:`Task.channels_at` (the weak head's stage and its input size).

A task is one module plus one line in a plugin's ``kdplug_tasks`` hook; see docs/plugins.md, "Writing a task".
"""
import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from torch import Tensor, nn

#: The position of a backbone's (last) output.
OUT = 'out'

#: Where a data preprocessor keeps whether it swaps the channels: mmpretrain's ClsDataPreprocessor as ``to_rgb``,
#: mmengine's ImgDataPreprocessor (mmdet's) as ``_channel_conversion``, mmseg's as ``channel_conversion``.
CHANNEL_FLAGS = ('to_rgb', '_channel_conversion', 'channel_conversion')


def swaps_channels(preprocessor: nn.Module) -> bool:
    """Whether a data preprocessor turns the loaded BGR images into RGB (whichever library's it is)."""
    return any(bool(getattr(preprocessor, name, False)) for name in CHANNEL_FLAGS)


def not_written(obj: Any, method: str, guide: str) -> str:
    """The message of a contract method a plugin's class left out."""
    return (f'{type(obj).__name__} does not implement {method}(), which kdplug calls: write it in the class '
            f'({type(obj).__module__}), see {guide}')


@dataclass
class LogitRows:
    """One group of rows of logits to distil: a classification batch, or the RoIs of one cascade stage."""
    logits: Tensor                    # (N, C) the student's, with gradient
    target: Optional[Tensor]          # (N,) labels or (N, C) soft labels; None where the task has none
    weight: Optional[Tensor] = None   # (N,) float row weights on the logits' device (0: left out); None: all 1
    scale: float = 1.0                # this group's weight in the total (e.g. a cascade stage's weight)
    key: str = ''                     # logged as ``distill.<key>loss_<name>`` (e.g. ``'s1.'``)
    context: Any = None               # what :meth:`Task.teacher_logits` needs to score the same rows (the RoIs)


@dataclass
class StudentOutput:
    """What one training forward of the student gives the distiller."""
    losses: Dict[str, Tensor]                       # the student's own losses, under its library's keys
    rows: List[LogitRows]                           # the logits to distil, group by group
    target: Optional[Tensor] = None                 # per-image targets (for feature-level losses); None: none
    features: Dict[str, Tensor] = field(default_factory=dict)   # position -> the student's feature there
    views: int = 1                                  # views of each image in the batch (MLKD: 2)
    # about the rows, logged as ``distill.<key>`` when logit losses distil them; keys must not contain "loss"
    # (mmengine sums every key that does)
    diagnostics: Dict[str, Tensor] = field(default_factory=dict)


def check_model_config(cfg: Any, role: str = 'a model') -> None:
    """A model config is a dict: its own ``type=...`` or an OpenMMLab ``cfg_path=...`` (``None`` from a config that
    left it out, a list, a path string: a TypeError that shows the expected form)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f'{role} config must be a dict, got {cfg!r}: e.g. '
                        "dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py') (its model, other keys merged "
                        "into it) or the model itself, dict(type='ImageClassifier', backbone=..., head=...)")


class Task:
    """Base of the tasks (see the module docstring). Subclasses set :attr:`scope` and implement the methods that
    raise ``NotImplementedError``; their constructor's keyword arguments are the task's options in the config
    (``task=dict(type='TwoStageDetectionTask', background='exclude')``)."""

    #: The OpenMMLab registry scope the task's models are built in (``'mmpretrain'``, ``'mmdet'``...).
    scope: str = ''
    #: The data preprocessor when neither the run nor the student gives one (``'DetDataPreprocessor'``).
    default_data_preprocessor: str = 'BaseDataPreprocessor'
    #: The most views of each image one batch may bring (ClassificationTask: 2, for MLKD).
    max_views: int = 1
    #: Whether the task weighs rows (:attr:`LogitRows.weight`): then every loss must take ``weight=``.
    weighs_rows: bool = False
    #: Whether each image (view) of a batch gives one row to distil, the model's own logits of it
    #: (:meth:`tensor_forward`), whatever the student does: then a teacher's rows can be scored once, without the
    #: student, and read from a teacher cache (CachedTeacher). Not so for rows the student picks (a detector's RoIs).
    image_rows: bool = False

    # -- building -----------------------------------------------------------------------------------------------
    @staticmethod
    def model_config(cfg: dict) -> dict:
        """``cfg`` itself, or the ``model`` of ``cfg['cfg_path']`` (``'mmpretrain::resnet/resnet18_8xb32_in1k.py'``,
        ``'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'`` or a file path) with the other keys merged into it.
        The distiller calls it once per model; the other methods get the resolved config."""
        from mmengine.config import Config, ConfigDict
        check_model_config(cfg)
        cfg = copy.deepcopy(dict(cfg))
        cfg_path = cfg.pop('cfg_path', None)
        if cfg_path is None:
            return cfg
        from mmengine.hub import get_config
        base = get_config(cfg_path) if '::' in cfg_path else Config.fromfile(cfg_path)
        merged = Config(dict(model=base.model))
        merged.merge_from_dict(dict(model=cfg))
        return merged.model.to_dict() if isinstance(merged.model, ConfigDict) else dict(merged.model)

    def data_preprocessor(self, data_preprocessor: Optional[dict], student_cfg: dict) -> dict:
        """The distiller's data preprocessor config: the run's, else the student's, else
        :attr:`default_data_preprocessor`; its type scoped (``mmdet.DetDataPreprocessor``), as the distiller builds
        it outside the task's scope."""
        cfg = copy.deepcopy(dict(data_preprocessor or student_cfg.get('data_preprocessor') or {}))
        cfg.setdefault('type', self.default_data_preprocessor)
        if self.scope and isinstance(cfg['type'], str) and '.' not in cfg['type']:
            cfg['type'] = f'{self.scope}.{cfg["type"]}'
        return cfg

    def inference_data_preprocessor(self, cfg: dict) -> dict:
        """The preprocessor of the student's own config (:func:`kdplug.distillers.export.student_config`) from the
        distiller's ``cfg`` (:meth:`data_preprocessor`'s): the same by default; a task whose training preprocessor
        serves the distillation only (several views) gives the one its library infers with."""
        return cfg

    def build_model(self, cfg: dict, role: str) -> nn.Module:
        """Build ``cfg`` (resolved) in :attr:`scope`; ``role`` (``'student'`` / ``'teacher'``) names it in errors.
        The config is a ``ConfigDict``: OpenMMLab models read ``train_cfg.rpn``, ``test_cfg.mode``... as attributes."""
        from mmengine.config import ConfigDict
        from mmengine.registry import MODELS, DefaultScope
        if not self.scope:  # mmengine's own error is about a relative import of '.registry'
            raise ValueError(f'{type(self).__name__}.scope is empty: set it to the OpenMMLab registry scope its '
                             "models are built in ('mmpretrain', 'mmdet', 'mmseg'...)")
        with DefaultScope.overwrite_default_scope(self.scope):
            try:
                return MODELS.build(ConfigDict(cfg))
            except KeyError as err:  # mmengine's words name the registry, not the task that chose it
                if 'is not in the' not in str(err):
                    raise
                said = str(err.args[0]).split('. ')[0]  # "X is not in the mmdet::model registry" (then a URL)
                raise ValueError(f'the {role} cannot be built: {said}. {type(self).__name__} builds its models '
                                 f'in the {self.scope!r} scope: give the {role} a model of that library (a model of '
                                 'another task, e.g. a classifier, cannot teach it), or the task of its own '
                                 'library') from err

    def num_classes(self, model: nn.Module) -> Optional[int]:
        """The classes the model predicts (None: unknown)."""
        return None

    def check_pair(self, student: nn.Module, teacher: nn.Module, data_preprocessor: nn.Module) -> None:
        """Raise if ``teacher`` cannot teach ``student`` (other classes, another input normalisation)."""
        student_classes, teacher_classes = self.num_classes(student), self.num_classes(teacher)
        if student_classes is not None and teacher_classes is not None and student_classes != teacher_classes:
            raise ValueError(
                f'the teacher predicts {teacher_classes} classes and the student {student_classes}: logit '
                'distillation needs the same classes in the same order. Set num_classes of both heads to the '
                'dataset\'s and use a teacher trained on that dataset')

    def check_dataset(self, dataset: Any, student: nn.Module) -> None:
        """Called once before training (``kdplug.TeacherDataCheckHook``) with the run's training dataset: raise if
        its annotations cannot train ``student`` (labels outside its classes). Default: nothing to check."""

    @staticmethod
    def check_same_preprocessing(preprocessor: nn.Module, model: nn.Module, role: str) -> None:
        """Raise if ``model`` was configured with another input normalisation than the distiller's preprocessor
        (the teacher scores the student's preprocessed batch: a caffe-style or BGR teacher would score images it
        never saw). Compares normalisation, mean, std and channel order with the model's own preprocessor."""
        own = getattr(model, 'data_preprocessor', None)
        if own is None:
            return

        def summary(module: nn.Module) -> tuple:
            mean, std = getattr(module, 'mean', None), getattr(module, 'std', None)
            return (bool(getattr(module, '_enable_normalize', False)),
                    None if mean is None else [round(v, 4) for v in mean.flatten().tolist()],
                    None if std is None else [round(v, 4) for v in std.flatten().tolist()],
                    swaps_channels(module))

        ours, theirs = summary(preprocessor), summary(own)
        if ours != theirs:
            raise ValueError(
                f'the {role} was configured with another image preprocessing than the distiller\'s (normalize, '
                f'mean, std, bgr_to_rgb): {theirs} vs {ours}. Both models see the same preprocessed batch, so their '
                'data_preprocessor settings must agree (e.g. a caffe-style teacher needs a caffe-style student)')

    # -- a training step ----------------------------------------------------------------------------------------
    def student_forward(self, student: nn.Module, inputs: Any, data_samples: List,
                        positions: Sequence[str] = ()) -> StudentOutput:
        """One training forward of the student: its losses, the rows to distil, its features at ``positions``."""
        raise NotImplementedError(not_written(self, 'student_forward', 'docs/plugins.md, "Writing a task"'))

    def teacher_logits(self, teacher: nn.Module, inputs: Any, data_samples: List,
                       student: StudentOutput) -> List[Tensor]:
        """The teacher's logits for each group of ``student.rows``, same rows in the same order. The caller
        decides about gradients (no_grad for a frozen or EMA teacher)."""
        raise NotImplementedError(not_written(self, 'teacher_logits', 'docs/plugins.md, "Writing a task"'))

    def features(self, model: nn.Module, inputs: Any, positions: Sequence[str]) -> Dict[str, Tensor]:
        """The model's features at ``positions``, from its backbone alone (no head)."""
        with self.recording(model, positions) as feats:
            self.backbone(model)(self.first_view(inputs))
        return feats

    def image_targets(self, data_samples: List) -> Optional[Tensor]:
        """Each image's target, labels (N,) or soft labels (N, C), for feature-level methods that need the class of
        an image (letKD's intermediate level); None where the task has none (a detection image has many)."""
        return None

    # -- predict ------------------------------------------------------------------------------------------------
    def predict(self, model: nn.Module, inputs: Any, data_samples: Optional[List]) -> List:
        return model.predict(inputs, data_samples)

    def tensor_forward(self, model: nn.Module, inputs: Any, data_samples: Optional[List]) -> Any:
        return model._forward(inputs, data_samples)

    # -- features at named positions ----------------------------------------------------------------------------
    @staticmethod
    def first_view(inputs: Any) -> Any:
        return inputs

    def backbone(self, model: nn.Module) -> nn.Module:
        """The module whose submodules are the positions of feature-level methods."""
        backbone = getattr(model, 'backbone', None)
        if backbone is None:
            raise TypeError(f'{type(model).__name__} has no backbone: {type(self).__name__} records features at '
                            'positions of model.backbone')
        return backbone

    def stages(self, model: nn.Module) -> List[str]:
        """The positions of the backbone's stages, in order: its children that are blocks of layers with weights (a
        stem's conv1 / bn1 are single layers, not stages)."""
        return [name for name, child in self.backbone(model).named_children()
                if next(child.parameters(), None) is not None and next(child.children(), None) is not None]

    def channels_at(self, model: nn.Module, position: str) -> Optional[int]:
        """The channels of the backbone's feature at ``position``: those of its last BatchNorm, None without one."""
        module = self.backbone(model) if position == OUT else dict(self.backbone(model).named_modules())[position]
        norms = [m.num_features for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return norms[-1] if norms else None

    def check_positions(self, model: nn.Module, positions: Iterable[str], role: str) -> None:
        """Raise unless every position is ``'out'`` or a submodule of the model's backbone."""
        named = dict(self.backbone(model).named_modules())
        unknown = [p for p in positions if p != OUT and (not p or p not in named)]
        if unknown:
            shown = [name for name in named if name and '.' not in name]
            raise ValueError(f'the {role}\'s backbone ({type(self.backbone(model)).__name__}) has no position '
                             f'{unknown[0]!r}: positions are "{OUT}" (its last output) or its submodules, e.g. '
                             f'{", ".join(shown[:8])}')

    @contextmanager
    def recording(self, model: nn.Module, positions: Iterable[str]) -> Iterator[Dict[str, Tensor]]:
        """Within this context, forwards of ``model`` record its backbone's features at ``positions`` into the
        dict it yields (the last forward wins)."""
        positions = set(positions)
        captured: Dict[str, Tensor] = {}
        if not positions:
            yield captured
            return
        backbone = self.backbone(model)
        named = dict(backbone.named_modules())
        handles = []

        def keep(position: str):
            def hook(_module, _args, output):
                if position == OUT and not isinstance(output, Tensor):
                    output = output[-1]
                captured[position] = output
            return hook
        for position in positions:
            handles.append((backbone if position == OUT else named[position]).register_forward_hook(keep(position)))
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()
