"""The plugin contract of kdplug: documented, empty hook functions.

A plugin is a module (or object) with functions marked ``@kdplug.hookimpl`` whose names are those below. kdplug's
own components come through these same hooks (see ``BUILTIN_PLUGINS`` in :mod:`kdplug.plugins`); a third-party
package announces its plugin module in the entry-point group ``kdplug``::

    # setup.cfg of the third-party package
    [options.entry_points]
    kdplug =
        mykd = mykd.plugin

    # mykd/plugin.py
    from kdplug import hookimpl

    @hookimpl
    def kdplug_losses():
        from mykd.loss import MyLoss   # import inside the hook: nothing heavy runs until kdplug asks
        return [MyLoss]

Every hook returns a list of classes, registered under their class names into the registries of
:mod:`kdplug.registry` (scope ``kdplug``) the first time a kdplug component is looked up. A misspelled hook name
(``kdplug_loss``) is an error at load time.
"""
from typing import List

import pluggy

hookspec = pluggy.HookspecMarker('kdplug')


@hookspec
def kdplug_losses() -> List[type]:
    """Logit loss classes (``torch.nn.Module``), registered into ``kdplug.registry.MODELS``.

    A teacher-based logit loss follows ``forward(student_logits, teacher_logits, target=None, weight=None)`` and
    returns a scalar already multiplied by its ``loss_weight``; ``weight`` (N,) are per-row weights the reduction
    honours (sum(w * l) / sum(w)).
    """


@hookspec
def kdplug_distillers() -> List[type]:
    """Distiller classes (mmengine ``BaseModel`` subclasses), registered into ``kdplug.registry.MODELS``."""


@hookspec
def kdplug_tasks() -> List[type]:
    """Downstream tasks (subclasses of :class:`kdplug.tasks.base.Task`), registered into
    ``kdplug.registry.TASKS``: what ``kdplug.Distiller`` asks of a family of models (build a student or teacher in
    the task's scope, its data preprocessor, one student forward giving the rows of logits to distil with their
    targets and row weights, the teacher's logits for the same rows, features at named positions, predict). The
    contract is the docstring of :mod:`kdplug.tasks.base`; docs/plugins.md, "Writing a task", walks through one.
    """


@hookspec
def kdplug_teachers() -> List[type]:
    """Teacher sources (subclasses of :class:`kdplug.teachers.base.TeacherSource`), registered into
    ``kdplug.registry.TEACHERS``: where the teacher's logits come from (a checkpoint, an EMA of the student, the
    student's own weak head...). ``setup(task, student, data_preprocessor)`` once, then ``teach(...)`` every step
    (see :mod:`kdplug.teachers.base`).
    """


@hookspec
def kdplug_models() -> List[type]:
    """Other model components (backbones, necks, heads, student-side layers), into ``kdplug.registry.MODELS``."""


@hookspec
def kdplug_student_modules() -> List[type]:
    """Student-side modules (``torch.nn.Module``) and the losses that train them, registered into
    ``kdplug.registry.MODELS``: layers a method inserts INTO the student (letKD's ``LetKDLayer``), trained, exported
    and run at inference with it.

    A student-side module follows ``forward(feature) -> feature`` (same shape). A config puts it at a named stage of
    the student's backbone with ``kdplug.BackboneWithModules(backbone=..., modules={position: cfg})`` (position:
    a submodule name of the backbone, or ``'out'`` for its output). The losses that train it come through this hook
    too (``kdplug_losses`` is for logit losses, all held to one conformance test): they have a ``student_module``
    attribute naming the position and are called by ``kdplug.Distiller`` as
    ``loss(module, teacher_feature, target)`` (see :mod:`kdplug.models.student_modules`).
    """


@hookspec
def kdplug_transforms() -> List[type]:
    """Data transforms (mmcv ``BaseTransform`` subclasses), registered into ``kdplug.registry.TRANSFORMS``."""


@hookspec
def kdplug_engine_hooks() -> List[type]:
    """mmengine ``Hook`` classes (loss warm-up, EMA teacher, export...), into ``kdplug.registry.HOOKS``."""
