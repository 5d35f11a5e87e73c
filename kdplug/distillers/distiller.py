"""Distiller: one mmengine model for every distillation: a task, a teacher source and losses::

    model = dict(
        type='kdplug.Distiller',
        task=dict(type='ClassificationTask'),           # or TwoStageDetectionTask, or a plugin's task
        student=dict(type='ImageClassifier', ...),      # or dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py')
        teacher=dict(type='CheckpointTeacher', model=dict(type='ImageClassifier', ...),
                     checkpoint='work_dirs/teacher/epoch_240.pth'),   # or EMATeacher(xi=...), WeakHeadTeacher(...)
        losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)))

A training step: the task runs the student once (its own losses, logged ``student.*``; the rows of logits to
distil); the teacher source gives the teacher's logits for the same rows; each loss is logged
``distill.<key>loss_<name>`` (``<key>``: empty, or a row group's such as a cascade stage's ``s1.``), multiplied by
its warm-up scale (``loss_scales[name]``, 1.0 unless ``LossWarmupHook`` ramps it) and by the group's scale.

``losses`` holds two kinds, told apart by a ``student_module`` attribute:

* **logit losses** (``kdplug_losses``): ``forward(student_logits, teacher_logits, target=None, weight=None)``;
  ``weight`` (row weights of the task: background RoIs, ignored pixels; teacher rows with NaN / inf get 0) is
  passed to the losses whose ``forward`` takes it. A task that weighs rows refuses losses that do not.
* **student-module losses** (letKD; ``kdplug_student_modules``): ``loss(module, teacher_feature, target)`` with the
  student-side module at ``loss.student_module`` and the teacher's feature at ``loss.teacher_stage`` (``'out'`` or
  a submodule of its backbone); a dict result adds its other entries as diagnostics ``distill.<name>_<key>``.

Views: a loss with ``views = 2`` (MLKD) takes two views of every image (weak rows, then strong rows); all the
losses take the same number, at most the task's ``max_views``, and every batch must bring it.

Prediction and export use the student only (``predicting_with_teacher()`` evaluates the teacher network).
"""
import difflib
import inspect
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import Tensor, nn

from kdplug.tasks.base import LogitRows, StudentOutput, check_model_config
from kdplug.teachers.base import DEVICE_READ_INTERVAL, evaluating_student_only


def is_module_loss(loss: nn.Module) -> bool:
    return isinstance(getattr(loss, 'student_module', None), str)


def takes_weight(loss: nn.Module) -> bool:
    """Whether a loss's forward takes row weights: a ``weight`` argument, or ``**kwargs`` that can take it."""
    parameters = inspect.signature(loss.forward).parameters.values()
    return any(p.name == 'weight' or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def depends_on(value: Tensor, tensor: Tensor) -> bool:
    """Whether ``tensor`` is in the autograd graph of ``value`` (a walk of the graph's nodes: nothing computed)."""
    goal = tensor.grad_fn
    stack, seen = [value.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if node is goal or getattr(node, 'variable', None) is tensor:  # a leaf's node holds it as ``variable``
            return True
        seen.add(node)
        stack.extend(child for child, _ in node.next_functions)
    return False


def total(value: Any) -> Tensor:
    """A logged loss value as one float32 number, NaN or inf when any of its elements is: a tensor, or a non-empty
    list of them (mmdet's per-level losses; mmengine sums each one's mean)."""
    if isinstance(value, Tensor):
        return value.detach().float().sum()
    return torch.stack([total(item) for item in value]).sum()


def loss_name_of(key: str, losses: Mapping[str, nn.Module]) -> Optional[str]:
    """The name in ``losses`` of the logged key ``distill.<group>loss_<name>``, None for another key."""
    if not key.startswith('distill.'):
        return None
    return next((name for name in losses if key.endswith(f'.loss_{name}')), None)


def misplaced_options(keys: Any, **parts: Any) -> str:
    """`` (model.task.background is an option of TwoStageDetectionTask)`` for each unknown distiller key that is an
    option of the task's or the teacher source's class (``--cfg-options model.background=exclude``)."""
    from kdplug.registry import TASKS, TEACHERS
    registries = {'task': TASKS, 'teacher': TEACHERS}
    said = []
    for part, cfg in parts.items():
        name = cfg if isinstance(cfg, str) else cfg.get('type') if isinstance(cfg, Mapping) else None
        cls = registries[part].get(name) if isinstance(name, str) else None
        if cls is None:
            continue
        options = inspect.signature(cls).parameters
        said += [f' (model.{part}.{key} is an option of {cls.__name__})' for key in keys if key in options]
    return ''.join(said)


def build_loss(name: str, cfg: Mapping) -> nn.Module:
    """``losses.<name>`` built; a bad option's ValueError / TypeError says which loss it is (mmengine's says which
    class, and a config may have two of one class)."""
    from kdplug.registry import MODELS
    try:
        return MODELS.build(cfg)
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError):  # a subclass may take other arguments
            raise
        raise type(err)(f'losses.{name}: {err}') from err


#: Arguments of OpenMMLab's own losses (mmdet, mmpretrain: forward(pred, label, weight, avg_factor, ...)) that a
#: kdplug logit loss never takes among its first three.
OPENMMLAB_LOSS_OPTIONS = ('weight', 'avg_factor', 'reduction_override', 'label_weight')


class Distiller(BaseModel):

    #: The keys of a distiller's config (mmengine's root registry builds it: its TypeError would not say this).
    KEYS = ('task', 'student', 'teacher', 'losses', 'data_preprocessor', 'init_cfg')

    def __init__(self, task: Union[str, dict], student: dict, teacher: Optional[dict] = None,
                 losses: Optional[Mapping[str, dict]] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, **unknown: Any) -> None:
        from kdplug.registry import TASKS, TEACHERS
        if unknown:
            close = {key: difflib.get_close_matches(key, self.KEYS, n=1) for key in unknown}
            raise TypeError(f'model=dict(type=\'kdplug.Distiller\') has no key {", ".join(map(repr, unknown))}'
                            + ''.join(f' (did you mean {match[0]!r}?)' for match in close.values() if match)
                            + misplaced_options(unknown, task=task, teacher=teacher)
                            + f'. Its keys are {", ".join(self.KEYS)}; a loss\'s options go in losses=dict(<name>='
                            'dict(type=..., ...)), a teacher\'s in teacher=dict(type=..., ...)')
        self_task = TASKS.build(dict(type=task) if isinstance(task, str) else task)
        check_model_config(student, 'model.student: the student\'s')
        student_cfg = self_task.model_config(student)
        super().__init__(data_preprocessor=self_task.data_preprocessor(data_preprocessor, student_cfg),
                         init_cfg=init_cfg)
        self.task = self_task
        example = 'losses=dict(kd=dict(type="KDLoss", temperature=4.0, loss_weight=0.9))'
        switched_off = [name for name, cfg in losses.items() if cfg is None] if isinstance(losses, Mapping) else []
        if switched_off:  # --cfg-options model.losses.kd=None drops a base config's loss, as None drops a hook
            losses = {name: cfg for name, cfg in losses.items() if cfg is not None}
        if not losses:
            raise ValueError(f'a distiller needs at least one loss, e.g. {example}'
                             + (f' (the config set {", ".join(switched_off)} to None)' if switched_off else ''))
        if not isinstance(losses, Mapping):
            raise TypeError(f'losses={losses!r}: losses is a dict of named losses (each name is logged as '
                            f'distill.loss_<name>), e.g. {example}')
        if isinstance(losses.get('type'), str):
            raise ValueError(f'losses={dict(losses)!r} is one loss: losses is a dict of named losses, e.g. '
                             f'losses=dict(kd=dict(type={losses["type"]!r}, ...))')
        if not isinstance(teacher, Mapping) or 'type' not in teacher:
            raise ValueError(f'teacher={teacher!r}: give a teacher source, e.g. teacher=dict(type="CheckpointTeacher", '
                             'model=..., checkpoint=...), dict(type="EMATeacher", xi=0.99) or '
                             'dict(type="WeakHeadTeacher", position="layer3"); registered: '
                             f'{", ".join(sorted(TEACHERS.all_names()))}')
        for name, cfg in losses.items():  # an option given to a loss the config does not have adds a loss of no type
            if not isinstance(cfg, Mapping) or 'type' not in cfg:
                close = difflib.get_close_matches(name, [n for n in losses if n != name], n=1)
                raise ValueError(f'losses.{name} = {cfg!r} has no type'
                                 + (f' (did you mean losses.{close[0]}?)' if close else '')
                                 + f': the losses of this config are {sorted(n for n in losses if n != name)}; a new '
                                 f'one needs its type, e.g. losses.{name}.type=KDLoss')
        self.losses = nn.ModuleDict({name: build_loss(name, cfg) for name, cfg in losses.items()})
        self.loss_scales: Dict[str, float] = {name: 1.0 for name in self.losses}
        self.module_losses: Tuple[str, ...] = tuple(n for n, loss in self.losses.items() if is_module_loss(loss))
        self.logit_losses: Tuple[str, ...] = tuple(n for n in self.losses if n not in self.module_losses)
        self._check_logit_loss_signatures()
        self._takes_weight = {name: takes_weight(self.losses[name]) for name in self.logit_losses}
        self.num_views = self._check_views()
        self._check_weights()
        self._check_row_comparisons()

        self.student = self.task.build_model(student_cfg, 'student')
        self.teacher = TEACHERS.build(teacher)
        self._check_self_distillation()
        self.student_only = evaluating_student_only()
        if self.student_only:  # tools/test.py: the student's predictions need no teacher checkpoint or store
            self.teacher.setup_to_evaluate(self.task, self.student, self.data_preprocessor)
        else:
            self.teacher.setup(self.task, self.student, self.data_preprocessor)
            self._check_module_losses()
        self._predict_with_teacher = False
        self._nonfinite_teacher_rows: Optional[Tensor] = None  # a device-side count: no host sync per step
        self._teacher_checks = 0
        self._distill_steps = 0
        self._gradient_checked: set = set()  # the logit losses whose gradient path to the student was walked
        self._weights_checked: Dict[str, int] = {}  # logit loss -> steps that tested its use of row weights
        self._nonfinite_losses: Optional[Dict[str, Tensor]] = None  # loss key -> device-side count of bad steps
        print_log(self.summary(), logger='current')

    def summary(self) -> str:
        """What this distiller trains with, logged at build: a config whose ``_base_`` has losses keeps them
        beside its own (mmengine merges dicts) unless it says ``losses=dict(_delete_=True, ...)``."""
        losses = '; '.join(f'{name}: {type(loss).__name__}({loss.extra_repr()})' for name, loss in self.losses.items())
        unread = ' (set up to evaluate the student: nothing of the teacher read)' if self.student_only else ''
        return (f'kdplug.Distiller: task {type(self.task).__name__}, teacher {type(self.teacher).__name__}{unread}, '
                f'losses {losses} (a loss of a _base_ config stays beside the config\'s own unless its losses say '
                '_delete_=True, or that loss is set to None: --cfg-options model.losses.<name>=None)')

    # -- checks at build time -----------------------------------------------------------------------------------
    def _check_views(self) -> int:
        views = {name: getattr(self.losses[name], 'views', 1) for name in self.logit_losses}
        if len(set(views.values())) > 1:
            raise ValueError(f'the losses take different numbers of views of each image ({views}): a batch brings '
                             'one number of views, so give them all the same (e.g. MLKDLoss(views=2) alone)')
        num_views = next(iter(views.values()), 1)
        if num_views > self.task.max_views or (num_views > 1 and self.module_losses):
            raise ValueError(f'{type(self.task).__name__} gives its losses {self.task.max_views} view(s) of each '
                             f'image{" with student-module losses, one" if self.module_losses else ""}, but '
                             f'{sorted(views)} take {num_views} (e.g. MLKDLoss(views=2)): use views=1, or '
                             'ClassificationTask with a MultiView pipeline and logit losses only')
        return num_views

    def _check_logit_loss_signatures(self) -> None:
        """Every logit loss is called ``loss(student_logits, teacher_logits, target)``: a class that cannot take
        that (another model registered under a loss's name, a forward without target) is named at build."""
        contract = ('A logit loss is forward(student_logits, teacher_logits, target=None, weight=None) returning a '
                    'scalar (the loss contract, docs/plugins.md); a loss on student-side modules sets student_module '
                    '(letKD)')
        for name in self.logit_losses:
            loss = self.losses[name]
            signature = inspect.signature(loss.forward)
            try:
                bound = signature.bind(None, None, None)
            except TypeError as err:
                raise TypeError(
                    f'losses.{name} ({type(loss).__name__}) is not a logit loss: its forward{signature} cannot take '
                    f'(student_logits, teacher_logits, target) ({err}). {contract}') from None
            # mmdet's and mmpretrain's losses take (pred, label, weight, avg_factor, ...): the target would be their
            # weight (class 0: a silent 0), and the distiller's row weights a second weight
            first = next(iter(bound.arguments), '')
            if first.startswith('teacher') or first in ('t', 't_logits', 'soft_target', 'soft_label'):
                raise TypeError(
                    f'losses.{name} ({type(loss).__name__}) names its first argument {first!r}, but the distiller '
                    f'passes the student\'s logits first: its forward{signature} would compute with the two '
                    f'swapped (a reversed KL, or a gradient sent to the teacher). {contract}')
            taken = [parameter for parameter in bound.arguments if parameter in OPENMMLAB_LOSS_OPTIONS]
            if taken:
                raise TypeError(
                    f'losses.{name} ({type(loss).__name__}) is not a kdplug logit loss: its forward{signature} would '
                    f'take the targets as {taken[0]!r} (an OpenMMLab loss: forward(pred, label, weight, ...)). Use a '
                    f'kdplug loss (e.g. KDLoss(temperature=4) for mmdet.KnowledgeDistillationKLDivLoss(T=4); '
                    f'kdplug-list-plugins lists them), or wrap yours. {contract}')

    def _check_weights(self) -> None:
        unweighted = [name for name, takes in self._takes_weight.items() if not takes]
        if self.task.weighs_rows and unweighted:
            raise ValueError(f'{type(self.task).__name__} weighs rows (e.g. background RoIs, ignored pixels), but '
                             f'the losses {unweighted} ({", ".join(type(self.losses[n]).__name__ for n in unweighted)})'
                             ' take no row weights: use losses that do (KDLoss, DKDLoss, NKDLoss... see the '
                             'README), or the task\'s options that weigh no rows (TwoStageDetectionTask: '
                             'background=\'include\'); a loss of your own: give its forward a weight=None argument '
                             '(the loss contract, docs/plugins.md)')

    def _check_row_comparisons(self) -> None:
        """A loss whose terms compare rows with each other (MLKD's batch and class levels) is defined on a batch of
        images; on RoIs or pixels its Gram matrices grow with the square of the rows (16k pixels: gigabytes)."""
        comparing = [name for name in self.logit_losses if getattr(self.losses[name], 'compares_rows', False)]
        if comparing and not self.task.image_rows:
            raise ValueError(
                f'the losses {comparing} ({", ".join(type(self.losses[n]).__name__ for n in comparing)}) compare the '
                f'rows of a batch with each other (MLKD\'s batch- and class-level terms: N x N matrices over the '
                f'images of a batch), and the rows of {type(self.task).__name__} are not images (RoIs, pixels): '
                'the terms would mean something else and their memory grows with the square of the rows. Use a '
                'per-row loss (KDLoss, DKDLoss, NKDLoss, NormKDLoss...)')

    def _check_self_distillation(self) -> None:
        """A loss whose second input is the student's own trained head (USKD's weak head: ``teacher_based =
        False``) would take a teacher's frozen logits in its place without a word, and train nothing there."""
        own = [name for name in self.logit_losses if not getattr(self.losses[name], 'teacher_based', True)]
        if self.logit_losses and not own and not self.teacher.external:  # e.g. KD from USKD's weak head alone
            raise ValueError(
                f'{self.teacher.description} ({type(self.teacher).__name__}) is a head of the student that only a '
                'self-distillation loss trains (USKDLoss: its mu term), and the losses '
                f'{list(self.logit_losses)} take its logits as a teacher\'s: it would stay at its random '
                "initialisation. Add losses=dict(uskd=dict(type='USKDLoss', ...)) (configs/uskd/), or distil from "
                'a teacher network (CheckpointTeacher, EMATeacher)')
        if own and self.teacher.external:
            raise ValueError(
                f'the losses {own} ({", ".join(type(self.losses[n]).__name__ for n in own)}) are self-distillation: '
                f'their second input is a head of the student trained with it, not a teacher\'s logits, and '
                f'{type(self.teacher).__name__} gives a teacher\'s: use teacher=dict(type=\'WeakHeadTeacher\', '
                "position=...) (configs/uskd/), or a teacher-based loss such as KDLoss")

    def _check_module_losses(self) -> None:
        from kdplug.models.student_modules import student_modules
        if not self.module_losses:
            return
        modules = student_modules(self.student)
        for name in self.module_losses:
            loss = self.losses[name]
            if loss.student_module not in modules:
                raise ValueError(
                    f'loss {name!r} trains the student module at {loss.student_module!r}, but the student has '
                    f'{"modules at " + ", ".join(map(repr, modules)) if modules else "no student-side modules"}. '
                    'Insert it with backbone=dict(type="kdplug.BackboneWithModules", backbone=..., '
                    f'modules=dict({loss.student_module}=dict(type=...)))')
        for name in self.module_losses:  # a loss that depends on which teacher (letKD's codewords) checks it first:
            check = getattr(self.losses[name], 'check_teacher', None)  # its own message names the source it needs
            if callable(check):
                check(self.teacher)
        if self.teacher.model is None:
            raise ValueError(f'the losses {list(self.module_losses)} learn from a teacher network\'s features, and '
                             f'{self.teacher.description} has none: use CheckpointTeacher or EMATeacher')
        self.task.check_positions(self.teacher.model, self.teacher_stages(), 'teacher')
        bad = [name for name in self.module_losses if 'loss' in name]
        if bad:
            raise ValueError(f'rename the losses {bad}: a student-module loss\'s diagnostics are logged as '
                             '"distill.<name>_<key>", and mmengine would sum every key containing "loss"')

    def teacher_stages(self) -> List[str]:
        return sorted({self.losses[name].teacher_stage for name in self.module_losses})

    # -- the teacher network: kept in eval mode, evaluated on request -------------------------------------------
    @property
    def teacher_model(self) -> Optional[nn.Module]:
        return self.teacher.model

    @contextmanager
    def predicting_with_teacher(self) -> Iterator[None]:
        """Within this context ``predict`` runs the teacher network (to evaluate it before training)."""
        if self.teacher_model is None:
            raise RuntimeError(f'{self.teacher.description} is not a network to evaluate')
        self._predict_with_teacher = True
        try:
            yield
        finally:
            self._predict_with_teacher = False

    # -- non-finite teacher logits ------------------------------------------------------------------------------
    #: How often (in calls) the count of non-finite teacher rows is read on an accelerator; on the CPU, every call.
    TEACHER_CHECK_INTERVAL = DEVICE_READ_INTERVAL
    #: Steps that test a loss taking row weights for reading them, until one step tells (check_weights_read)
    WEIGHT_CHECK_STEPS = 5

    def finite_teacher_rows(self, teacher_logits: Tensor,
                            weight: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """Teacher rows with a NaN or inf are left out of every loss (logits zeroed, row weight 0; a loss that
        takes no row weights is multiplied by the third value, 0 when any row was left out), so no NaN and no zeroed
        row reaches the student's gradient, and counted on the device. Reading the count synchronises with the
        device, so it is read every call on the CPU and every :attr:`TEACHER_CHECK_INTERVAL` calls (a call per group
        of rows: per cascade stage) and before every prediction on an accelerator: a broken teacher stops the run
        within that many steps, with the student's weights intact."""
        finite = torch.isfinite(teacher_logits).all(dim=-1)
        bad = (~finite).sum()
        self._nonfinite_teacher_rows = bad if self._nonfinite_teacher_rows is None else \
            self._nonfinite_teacher_rows + bad
        self._teacher_checks += 1
        if teacher_logits.device.type == 'cpu' or self._teacher_checks % self.TEACHER_CHECK_INTERVAL == 0:
            self.check_teacher_rows()
        teacher_logits = torch.where(finite.unsqueeze(-1), teacher_logits, torch.zeros_like(teacher_logits))
        keep = finite.to(teacher_logits.dtype if teacher_logits.is_floating_point() else torch.float32)
        return teacher_logits, keep if weight is None else weight * keep, finite.all()

    def check_teacher_rows(self) -> None:
        """Raise if any teacher row seen so far was not finite."""
        count = 0 if self._nonfinite_teacher_rows is None else int(self._nonfinite_teacher_rows)
        if count:
            raise FloatingPointError(
                f'{self.teacher.description} produced non-finite logits (NaN or inf) for {count} rows in the '
                f'{self._distill_steps} distillation steps so far. Those rows were left out of the distillation '
                'losses, so the student\'s weights are finite, and the run stops here. Check the teacher: evaluate '
                'it alone (tools/test.py with its config and checkpoint), check its input normalisation against the '
                'student\'s data_preprocessor, and under --amp try float32 for the teacher (float16 overflows past '
                '65504)' + ('; an EMA self-teacher is an average of the student, so the student itself diverged: '
                            'lower the learning rate' if 'EMA' in self.teacher.description else ''))

    # -- losses -------------------------------------------------------------------------------------------------
    def check_views(self, views: int) -> None:
        """Raise unless the batch brings as many views of each image as the losses take."""
        if views == self.num_views:
            return
        names = {name: type(loss).__name__ for name, loss in self.losses.items()}
        if views < self.num_views:
            raise ValueError(
                f'the losses {names} take {self.num_views} views of every image (MLKD: a weak and a strong one), '
                f'but the batch brings {views}: put mmpretrain\'s dict(type=\'MultiView\', num_views=[1, 1], '
                'transforms=[weak_pipeline, strong_pipeline]) before PackInputs in the training pipeline, with '
                "data_preprocessor=dict(type='mmpretrain.SelfSupDataPreprocessor', ...), as "
                'configs/_base_/datasets/*_multiview.py do')
        fix = (f'give MultiView {self.num_views} views (num_views=[1, 1] with two pipelines)' if self.num_views > 1
               else 'remove the MultiView transform, or use losses that take the views (MLKDLoss(views=2))')
        raise ValueError(f'the training pipeline gives {views} views of every image (a MultiView transform), but the '
                         f'losses {names} take {self.num_views}: {fix}')

    def distill_losses(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor],
                       weight: Optional[Tensor] = None, scale: float = 1.0, key: str = '') -> Dict[str, Tensor]:
        """``distill.<key>loss_<name>`` of each logit loss, times its warm-up scale and ``scale``."""
        all_finite = None
        if self.teacher.external:
            teacher_logits, weight, all_finite = self.finite_teacher_rows(teacher_logits, weight)
        out = {}
        for name in self.logit_losses:
            loss = self.losses[name]
            kwargs = {} if weight is None or not self._takes_weight[name] else {'weight': weight}
            value = loss(student_logits, teacher_logits, target, **kwargs)
            if not isinstance(value, Tensor) or value.dim() != 0:
                shown = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise TypeError(f'losses.{name} ({type(loss).__name__}) returned {shown}, not a scalar tensor: a '
                                'logit loss reduces its rows itself (kdplug.losses.functional.reduce_per_sample; '
                                'the loss contract, docs/plugins.md)')
            if value.dtype != torch.float32:  # float16 overflows once --amp scales it by 65536; float64 is slow
                raise TypeError(f'losses.{name} ({type(loss).__name__}) returned a {value.dtype} value: a logit loss '
                                'computes in float32 whatever its inputs (.float() on the logits first; under --amp '
                                'they are float16, and a float16 loss overflows when the optimizer wrapper scales '
                                'it). kdplug.testing.check_logit_loss checks a loss against the whole contract')
            self.check_student_gradient(name, value, student_logits)
            training = student_logits.requires_grad and torch.is_grad_enabled()
            if kwargs and training and self._weights_checked.get(name, 0) < self.WEIGHT_CHECK_STEPS:
                self.check_weights_read(name, student_logits, teacher_logits, target)
            if all_finite is not None and not self._takes_weight[name]:
                value = value * all_finite  # it cannot leave a zeroed row out: the whole batch is left out
            out[f'distill.{key}loss_{name}'] = (self.loss_scales[name] * scale) * value
        return out

    def check_student_gradient(self, name: str, value: Tensor, student_logits: Tensor) -> None:
        """A logit loss's value must carry a gradient to the student's logits when they take one (training): a
        forward that takes the teacher's logits first, or detaches the student's, trains nothing and would be logged
        every step as if it did. ``requires_grad`` is read every call (free); the path from the value to the
        student's logits is walked once per loss (the autograd graph, nothing computed)."""
        if not (student_logits.requires_grad and torch.is_grad_enabled()):
            return
        checked = name in self._gradient_checked
        if value.requires_grad and (checked or not student_logits.numel()):
            return
        if not value.requires_grad or not depends_on(value, student_logits):
            raise TypeError(
                f'losses.{name} ({type(self.losses[name]).__name__}) returned a value that does not depend on the '
                'student\'s logits: no gradient reaches the student, so it would train nothing while logged as a '
                'loss. A logit loss is forward(student_logits, teacher_logits, target, weight=None), the student '
                'first, and keeps the student\'s logits in the graph (no .detach(), torch.no_grad(), .item() or '
                'numpy on them); kdplug.testing.check_logit_loss checks a loss against the whole contract')
        self._gradient_checked.add(name)

    def check_weights_read(self, name: str, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor]
                           ) -> None:
        """A loss whose forward takes ``weight`` must reduce its rows as sum(w * l) / sum(w): the distiller leaves a
        teacher's non-finite rows out by weight 0, and a detection task weighs its RoIs (background ones 0). Checked
        at a loss's first training step, on that step's rows (three forwards without gradients): weight 0 on the
        second half of the images (in every view) must give the loss of the first half alone. A loss that ignores
        its weights, or divides by the number of rows, is refused. A step whose halves give the same loss (an EMA
        teacher's first step, equal to the student) tells nothing: the next steps try again, up to
        WEIGHT_CHECK_STEPS."""
        self._weights_checked[name] = self._weights_checked.get(name, 0) + 1
        rows, views = student_logits.shape[0], self.num_views
        images = rows // views if rows % views == 0 else rows
        if images < 2:
            return
        loss, half = self.losses[name], (images + 1) // 2
        # the first half of the images in each view (views are stacked: weak rows, then strong rows)
        kept = torch.cat([torch.arange(half) + view * images for view in range(rows // images)]).to(
            student_logits.device)
        weight = torch.zeros(rows, device=student_logits.device).index_fill_(0, kept, 1.0)
        with torch.no_grad():
            unweighted = loss(student_logits, teacher_logits, target).float()
            weighted = loss(student_logits, teacher_logits, target, weight=weight).float()
            first_half = loss(student_logits[kept], teacher_logits[kept],
                              None if target is None else target[kept]).float()
        if not bool(torch.isfinite(torch.stack([unweighted, weighted, first_half])).all()):
            return  # nothing to compare: the count of non-finite values names the loss (count_nonfinite_losses)
        scale = torch.stack([unweighted.abs(), first_half.abs()]).max().clamp_min(1e-6)
        if bool((weighted - first_half).abs() <= 1e-3 * scale):
            if bool((first_half - unweighted).abs() > 1e-3 * scale):
                self._weights_checked[name] = self.WEIGHT_CHECK_STEPS  # the halves differ: the weights are read
            return
        ignored = bool((weighted - unweighted).abs() <= 1e-6 * scale)
        how = ('takes a weight argument but ignores it: weight 0 on the rows of half the images left its value '
               'unchanged' if ignored else
               'weighs its rows otherwise than sum(w * l) / sum(w): weight 0 on the rows of half the images gave')
        raise TypeError(
            f'losses.{name} ({type(loss).__name__}) {how} ({float(weighted):.6g}; those rows left out give '
            f'{float(first_half):.6g}). The distiller leaves non-finite teacher rows out by weight 0 and tasks weigh '
            'their rows, so it would learn from left-out rows or at another scale: reduce with sum(w * l) / sum(w) '
            '(kdplug.losses.functional.reduce_per_sample), or drop weight from forward\'s signature; '
            'kdplug.testing.check_logit_loss checks a loss against the whole contract')

    # -- non-finite loss values ---------------------------------------------------------------------------------
    def count_nonfinite_losses(self, losses: Mapping[str, Any], student: StudentOutput) -> None:
        """Every value mmengine adds to the loss it trains on (a key with "loss") must be finite: a NaN or inf one
        would train the student into NaN for the rest of the run, logged as ``loss: nan``. Counted on the device,
        read as :meth:`finite_teacher_rows` reads its count (every step on the CPU, before the optimizer steps:
        the weights stay those of the last finite step)."""
        values = {key: value for key, value in losses.items()
                  if 'loss' in key and (isinstance(value, Tensor) or value)}  # mmengine's parse_losses reads these
        if not values:
            return
        sums = torch.stack([total(value) for value in values.values()])
        bad = (~torch.isfinite(sums)).to(torch.int32)
        if self._nonfinite_losses is None or list(self._nonfinite_losses) != list(values):
            self.check_losses()  # the keys changed (another group of rows): read what was counted under the old
            self._nonfinite_losses = dict(zip(values, bad))
        else:
            self._nonfinite_losses = {key: count + flag for (key, count), flag in zip(self._nonfinite_losses.items(),
                                                                                        bad)}
        if sums.device.type == 'cpu':
            self.check_losses(student)  # this step's: its logits tell a diverged student from a broken loss
        elif self._distill_steps % self.TEACHER_CHECK_INTERVAL == 0:
            self.check_losses()

    def check_losses(self, student: Optional[StudentOutput] = None) -> None:
        """Raise if a loss value counted so far was not finite, saying whose it is; ``student``: this step's
        output, whose logits tell a diverged student from a broken loss."""
        counts = {key: int(count) for key, count in (self._nonfinite_losses or {}).items()}
        bad = [key for key, count in counts.items() if count]
        if not bad:
            return
        self._nonfinite_losses = None
        named = ', '.join(f'{key}' + (f' ({type(self.losses[name]).__name__})' if name else '')
                          for key, name in ((key, loss_name_of(key, self.losses)) for key in bad))
        when = (f'at distillation step {self._distill_steps}' if student is not None else
                f'in the {self._distill_steps} distillation steps so far ({self.TEACHER_CHECK_INTERVAL} between two '
                'reads on an accelerator: resume from a checkpoint written before)')
        student_finite = None if student is None else \
            all(bool(torch.isfinite(rows.logits).all()) for rows in student.rows)
        diverged = ('the student diverged: lower the learning rate, clip its gradients (optim_wrapper=dict('
                    'clip_grad=dict(max_norm=...))), and under --amp check for float16 overflow')
        if student_finite is False:
            why = f'the student\'s own logits are not finite: {diverged}'
        elif all(key.startswith('student.') for key in bad):
            why = ('the student\'s own loss is not finite from finite logits: check its labels and its loss config'
                   if student_finite else f'the student\'s own loss is not finite: {diverged}, or check its labels')
        else:
            why = ('the loss computes a NaN or inf itself (teacher rows with NaN or inf never reach a loss'
                   + (', and the student\'s logits were finite' if student_finite else '') + '): a bug in it, or a '
                   'hyper-parameter outside its range. kdplug.testing.check_logit_loss checks a logit loss against '
                   'the contract (constant logits, half precision, empty batches)')
        stop = 'before the optimizer takes this step' if student is not None else 'at the first read of the count'
        raise FloatingPointError(f'{named} not finite (NaN or inf) {when}: {why}. The run stops here, {stop}')

    def module_losses_of(self, student: StudentOutput, teacher_feats: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``distill.loss_<name>`` (and its diagnostics) of each student-module loss."""
        from kdplug.models.student_modules import student_modules
        modules = student_modules(self.student)
        out: Dict[str, Tensor] = {}
        for name in self.module_losses:
            loss = self.losses[name]
            value = loss(modules[loss.student_module], teacher_feats[loss.teacher_stage], student.target)
            if not isinstance(value, Mapping):
                value = {'loss': value}
            out[f'distill.loss_{name}'] = self.loss_scales[name] * value['loss']
            for key, extra in value.items():
                if key != 'loss':
                    out[f'distill.{name}_{key}'] = extra.detach() if isinstance(extra, Tensor) else extra
        return out

    def studied(self, output: Any) -> StudentOutput:
        """The task's answer, checked as :meth:`taught` checks the teacher source's: a plugin's task that returns
        something else would fail far from its cause, and a diagnostic named like a loss would change the total."""
        task = type(self.task).__name__
        if not isinstance(output, StudentOutput) or not isinstance(output.rows, (list, tuple)) or \
                not all(isinstance(rows, LogitRows) for rows in output.rows):
            what = type(output).__name__ if not isinstance(output, StudentOutput) else \
                f'a StudentOutput whose rows are a {type(output.rows).__name__}'
            raise TypeError(f'{task}.student_forward returned {what}: a task returns a kdplug.tasks.base.'
                            'StudentOutput whose rows are a list of LogitRows, one per group of rows (see '
                            'kdplug.tasks.base.Task.student_forward)')
        lossy = [key for key in output.diagnostics if 'loss' in key]
        if lossy:
            raise ValueError(f'{task}.student_forward gave the diagnostics {lossy}: mmengine adds every logged key '
                             'that contains "loss" to the loss it trains on; rename them (e.g. num_rois)')
        return output

    def taught(self, result: Any, groups: Sequence[LogitRows]) -> Tuple[Optional[List[Tensor]], Dict[str, Tensor]]:
        """A teacher source's answer for the student's ``groups`` of rows, checked: a plugin's source that returns
        something else would otherwise fail far from its cause, or, with fewer groups of logits or rows than the
        student's, leave rows undistilled."""
        source = type(self.teacher).__name__
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f'{source}.teach returned a {type(result).__name__}: a teacher source returns (logits, '
                            'features), a list of (N, C) tensors, one per group of the student\'s rows (None when '
                            'asked for no logits), and a dict of features by position ({} when none were asked for): '
                            'see kdplug.teachers.base.TeacherSource.teach')
        logits, features = result
        if self.logit_losses and (not isinstance(logits, (list, tuple)) or len(logits) != len(groups)):
            given = f'{len(logits)} groups' if isinstance(logits, (list, tuple)) else f'a {type(logits).__name__}'
            raise ValueError(f'{source}.teach gave {given} of logits for the student\'s {len(groups)} group(s) of '
                             'rows: give a list with one (N, C) tensor per group of student.rows, in their order')
        for index, (rows, given) in enumerate(zip(groups, logits or ())):
            wanted = tuple(rows.logits.shape)
            if not isinstance(given, Tensor) or tuple(given.shape[:1]) != wanted[:1]:
                shown = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
                raise ValueError(f'{source}.teach gave {shown} logits for group {index} of the student\'s rows, '
                                 f'whose logits are {wanted}: one teacher row per student row, in their order')
        return logits, features

    def loss(self, inputs: Any, data_samples: List) -> Dict[str, Tensor]:
        if self.student_only:
            raise RuntimeError('this distiller was built to evaluate its student alone (kdplug.teachers.base.'
                               'evaluating_the_student, tools/test.py): its teacher was not read, so it cannot train')
        self._distill_steps += 1
        if self._distill_steps == 1:
            self.check_schedules()
        self.teacher.before_step(self.student)
        student = self.studied(self.task.student_forward(self.student, inputs, data_samples,
                                                         self.teacher.student_positions))
        self.check_views(student.views)
        teacher_logits, teacher_feats = self.taught(self.teacher.teach(
            self.task, inputs, data_samples, student, self.teacher_stages(), with_logits=bool(self.logit_losses)),
            student.rows)
        losses = {f'student.{key}': value for key, value in student.losses.items()}
        if self.logit_losses:
            for rows, logits in zip(student.rows, teacher_logits):
                if rows.weight is not None:
                    self.check_row_weights()
                losses.update(self.distill_losses(rows.logits, logits, rows.target, rows.weight, rows.scale,
                                                  rows.key))
        losses.update(self.module_losses_of(student, teacher_feats))
        # diagnostics of the rows (detection's num_rois): nothing to say when no logit loss distils them (letKD)
        for key, value in (student.diagnostics if self.logit_losses else {}).items():
            if f'distill.{key}' in losses:
                raise ValueError(f'{type(self.task).__name__}.student_forward gave the diagnostic {key!r}, which is '
                                 f'also the name of a distillation value (distill.{key}): rename it')
            losses[f'distill.{key}'] = value
        self.count_nonfinite_losses(losses, student)
        return losses

    def check_schedules(self) -> None:
        """A loss part that a hook must drive (``scheduled = False`` until its hook sets it, e.g. CTKD's learned
        temperature and its adversarial strength lambda) and that no hook drives would train as something else
        without a word (CTKD: plain KD at 15.6, moved by weight decay alone). The part names its hook
        (``SCHEDULE_HOOK``) and what would happen (``UNSCHEDULED``)."""
        undriven = {name: module for name, loss in self.losses.items() for module in loss.modules()
                    if getattr(module, 'scheduled', None) is False}
        if undriven:
            raise RuntimeError('; '.join(
                f'losses.{name} has a {type(module).__name__} that {module.SCHEDULE_HOOK} drives, and the run has '
                f"no such hook: add custom_hooks=[dict(type='{module.SCHEDULE_HOOK}')]. Without it "
                f'{module.UNSCHEDULED}' for name, module in undriven.items()))

    def check_row_weights(self) -> None:
        """Row weights arrived from a task that does not say it weighs rows (``weighs_rows = False``): a loss that
        takes none would silently learn from the rows the task left out."""
        unweighted = [name for name, takes in self._takes_weight.items() if not takes]
        if unweighted:
            raise ValueError(f'{type(self.task).__name__}.student_forward gave row weights, but the losses '
                             f'{unweighted} take none: they would learn from the rows the task left out. Set '
                             f'weighs_rows = True on {type(self.task).__name__} (then such losses are refused at '
                             'build), and use losses whose forward takes weight=')

    # -- mmengine's modes ---------------------------------------------------------------------------------------
    def predict(self, inputs: Any, data_samples: Optional[List] = None) -> List:
        return self.task.predict(self.teacher_model if self._predict_with_teacher else self.student, inputs,
                                 data_samples)

    def forward(self, inputs: Any, data_samples: Optional[List] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            self.check_losses()
            if self.teacher.external:
                self.check_teacher_rows()  # validation runs after the last training steps: nothing unreported
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.task.tensor_forward(self.student, inputs, data_samples)
        raise RuntimeError(f'invalid mode {mode!r}: use "loss", "predict" or "tensor"')

