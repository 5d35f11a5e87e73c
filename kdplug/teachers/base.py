"""The contract of a teacher source: where the teacher's logits (and features) come from, for any task.

A teacher source is an ``nn.Module`` built from the ``teacher=`` of a :class:`kdplug.Distiller` config. The
distiller calls :meth:`TeacherSource.setup` once, after building the student; before training
``kdplug.TeacherDataCheckHook`` shows it the run's training data (:meth:`TeacherSource.check_data`); every training
step the distiller calls :meth:`TeacherSource.teach` with the student's output; it returns the teacher's logits for
each group of rows (same rows, same order) and the teacher's features at the positions feature-level losses ask for.
Sources:

* :class:`~kdplug.teachers.checkpoint.CheckpointTeacher`: a frozen model loaded from a checkpoint;
* :class:`~kdplug.teachers.ema.EMATeacher`: an exponential moving average of the student;
* :class:`~kdplug.teachers.weak_head.WeakHeadTeacher`: no teacher model: a trained linear head on a middle stage
  of the student itself (USKD's weak head);
* :class:`~kdplug.teachers.cached.CachedTeacher`: the teacher's logits read from a store made once by
  ``tools/cache_teacher.py`` (the offline teacher).

:class:`ModelTeacher` is the base of sources that hold a teacher network: it runs the task's
:meth:`~kdplug.tasks.base.Task.teacher_logits` without gradient, recording features on the way. A new source is one
class with ``setup`` and ``teach`` plus one line in a plugin's ``kdplug_teachers`` hook (CachedTeacher is one).
"""
import contextvars
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from kdplug.tasks.base import StudentOutput, Task, not_written


#: How often (in steps) a check that must read a value off an accelerator reads it: reading waits for the device,
#: which a training step otherwise does not (the distiller's count of non-finite teacher rows, the cached teacher's
#: labels); on the CPU such checks read every step.
DEVICE_READ_INTERVAL = 50


_STUDENT_ONLY = contextvars.ContextVar('kdplug_student_only', default=False)


@contextmanager
def evaluating_the_student() -> Iterator[None]:
    """Within this context a distiller is built to evaluate its student alone (``tools/test.py``: predictions come
    from the student): its teacher source is set up with :meth:`TeacherSource.setup_to_evaluate`, which reads no
    teacher checkpoint or store (a run's checkpoint is tested where its teacher file is not, and a URL teacher is
    not downloaded to test the student)."""
    token = _STUDENT_ONLY.set(True)
    try:
        yield
    finally:
        _STUDENT_ONLY.reset(token)


def evaluating_student_only() -> bool:
    return _STUDENT_ONLY.get()


class TeacherSource(nn.Module):
    """Base of the teacher sources (see the module docstring)."""

    #: How errors and logs name this teacher.
    description = 'the teacher'
    #: Whether its rows come from another network than the student (then rows with NaN or inf are left out of
    #: the losses and stop the run; a student's own head is the student's business).
    external = True
    #: Whether it is a trained network when the run starts (kdplug.TeacherEvalHook evaluates only such a teacher: an
    #: EMA self-teacher is then the untrained student's copy).
    trained_before_the_run = True
    #: Positions of the STUDENT's backbone whose features this source reads (StudentOutput.features).
    student_positions: Tuple[str, ...] = ()

    def setup(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        """Build what the source needs, once the student exists: when the distiller is built, before the runner
        initialises the student's weights (``init_cfg``) and loads ``load_from`` or a resumed checkpoint, so the
        student's weights are not final here: a source that copies them does so in :meth:`before_step` (the EMA
        teacher's copy is made at the first step)."""

    def setup_to_evaluate(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        """Called instead of :meth:`setup` when the distiller is built to evaluate its student alone
        (:func:`evaluating_the_student`). The default is :meth:`setup`: a source that is part of the run's
        checkpoints (the EMA teacher's average, the weak head) builds its modules so that the checkpoint loads;
        a source that reads files the student's predictions do not need (a teacher checkpoint, a store) reads
        nothing."""
        self.setup(task, student, data_preprocessor)

    def check_data(self, dataset: Optional[Mapping[str, Any]], num_images: int) -> None:
        """Called once before training (``kdplug.TeacherDataCheckHook``) with the run's training dataset config and
        its length: a source whose logits depend on the data (the cached teacher) refuses data it cannot serve."""

    def check_schedule(self, seed: Optional[int], max_epochs: Optional[int]) -> None:
        """Called once before training (``kdplug.TeacherDataCheckHook``) with the run's seed and number of epochs
        (None for an iteration-based run): a source that holds what a seeded run draws (the cached teacher's epochs
        mode) refuses another seed, or more epochs than it holds, before the first step."""

    def check_classes(self, classes: Sequence[str]) -> None:
        """Called once before training (``kdplug.TeacherDataCheckHook``) with the class names of the run's training
        dataset: a source whose teacher was trained on named classes (a checkpoint's meta) refuses other ones, or
        the same ones in another order, which the class count alone lets through."""

    def identity(self) -> Optional[str]:
        """What the teacher is, recorded in the run's checkpoints by ``kdplug.TeacherDataCheckHook`` so that a resume
        with another teacher is refused (the run would go on learning from another network without a word): the
        sha256 of a teacher checkpoint, which a copy or a move keeps. None: nothing outside the run's checkpoint
        (a self-teacher: its state is in the checkpoint itself)."""
        return None

    def before_step(self, student: nn.Module) -> None:
        """Called at the start of every training step (the EMA teacher starts as a copy of the student)."""

    @property
    def model(self) -> Optional[nn.Module]:
        """The teacher network (to evaluate it, or to read its features), or None when there is none."""
        return None

    def teach(self, task: Task, inputs: Any, data_samples: List, student: StudentOutput,
              positions: Sequence[str] = (), with_logits: bool = True
              ) -> Tuple[Optional[List[Tensor]], Dict[str, Tensor]]:
        """The teacher's logits for each group of ``student.rows`` (None unless ``with_logits``) and its features
        at ``positions`` (of its backbone)."""
        raise NotImplementedError(not_written(self, 'teach', 'docs/plugins.md, "Writing a task", its teacher sources'))


class ModelTeacher(TeacherSource):
    """A source backed by a teacher network, run without gradient on the student's batch."""

    @torch.no_grad()
    def teach(self, task: Task, inputs: Any, data_samples: List, student: StudentOutput,
              positions: Sequence[str] = (), with_logits: bool = True
              ) -> Tuple[Optional[List[Tensor]], Dict[str, Tensor]]:
        if not with_logits:
            return None, task.features(self.model, inputs, positions)
        with task.recording(self.model, positions) as feats:
            logits = task.teacher_logits(self.model, inputs, data_samples, student)
        return logits, dict(feats)
