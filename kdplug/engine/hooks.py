"""mmengine hooks of kdplug, contributed through the ``kdplug_engine_hooks`` plugin hook."""
import math
import numbers
import os
import random
import re
import time
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper

from kdplug.engine.checkpoint import replaced_whole
from kdplug.losses.ctkd import LearnableTemperature, cosine_curriculum
from kdplug.losses.functional import check_hyperparameter

if TYPE_CHECKING:
    from mmengine.runner import Runner


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / FSDP wrapper (mmengine's), or the model itself."""
    return model.module if is_model_wrapper(model) else model


def log_with_validation(runner: 'Runner', scalars: dict) -> None:
    """Scalars logged in the next validation record (mmengine's LoggerHook writes every ``val/*`` scalar of the
    message hub there, at the step of that validation), not as a record of their own: analysis tools read the first
    record without ``lr`` as the validation keys (mmpretrain's analyze_logs refused ``accuracy/top1`` when kdplug's
    ``teacher/*`` record came first)."""
    for key, value in scalars.items():
        runner.message_hub.update_scalar(f'val/{key}', value)


def check_by_epoch(hook: str, by_epoch: Any) -> bool:
    """``by_epoch`` must be a bool: the string 'False' of a --cfg-options typo is truthy."""
    if not isinstance(by_epoch, bool):
        raise TypeError(f'{hook}: by_epoch must be True or False, got {by_epoch!r}')
    return by_epoch


def check_count(hook: str, name: str, value: Any, unit: str) -> int:
    """A count of epochs, iterations or batches: a whole number >= 1 (2.0 is 2; 2.5, '5', NaN and inf are refused:
    each was silently rounded or failed in Python's words)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
            value != int(value) or value < 1:
        raise ValueError(f'{hook}: {name} must be a whole number of {unit} >= 1, got {value!r}')
    return int(value)


def loss_names(hook: str, losses: Any) -> Optional[List[str]]:
    """None (every loss), one loss's name or a list of names: losses='kd' was read as the losses 'k' and 'd'."""
    if losses is None:
        return None
    if isinstance(losses, str):
        return [losses]
    if not isinstance(losses, (list, tuple)) or not all(isinstance(name, str) for name in losses):
        raise TypeError(f'{hook}: losses must be a loss\'s name or a list of names (the keys of model.losses), got '
                        f'{losses!r}')
    return list(losses)


def check_counts_epochs(hook: str, by_epoch: bool, runner: 'Runner') -> None:
    """A hook that counts epochs in an iteration-based run stays at its first value: the loop's epoch stays 0."""
    from mmengine.runner import EpochBasedTrainLoop
    loop = getattr(runner, 'train_loop', None)
    if by_epoch and loop is not None and not isinstance(loop, EpochBasedTrainLoop):
        raise ValueError(f'{hook}(by_epoch=True) counts epochs, but this run trains by iterations '
                         f'({type(loop).__name__}): its epoch stays 0, so the schedule would stay at its '
                         'first value for the whole run. Give the hook by_epoch=False (its count is then in '
                         'iterations)')


class LossWarmupHook(Hook):
    """Ramp distillation losses in: scale = min(epoch / warmup, 1), counting epochs from 1 (DKD's warm-up,
    Zhao et al. 2022: 20 epochs on CIFAR-100, 1 on ImageNet). With ``by_epoch=False`` the ramp is per iteration.

    The scale is derived from the loop's position before every iteration, so it is right after a resume too.
    """

    priority = 'NORMAL'
    distillation_only = True  # a hook of the distiller: a student's own config (the export) leaves it out

    def __init__(self, warmup: int, losses: Union[str, Sequence[str], None] = None, by_epoch: bool = True) -> None:
        self.by_epoch = check_by_epoch('LossWarmupHook', by_epoch)
        self.warmup = check_count('LossWarmupHook', 'warmup', warmup, 'epochs' if by_epoch else 'iterations')
        self.losses = loss_names('LossWarmupHook', losses)

    def before_train(self, runner: 'Runner') -> None:
        check_counts_epochs('LossWarmupHook', self.by_epoch, runner)

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch=None) -> None:
        model = unwrap(runner.model)
        names = list(model.loss_scales) if self.losses is None else list(self.losses)
        unknown = sorted(set(names) - set(model.loss_scales))
        if unknown:
            raise KeyError(f'LossWarmupHook: no loss named {unknown} in the distiller; its losses are '
                           f'{sorted(model.loss_scales)}')
        step = runner.epoch + 1 if self.by_epoch else runner.iter + 1
        scale = min(step / self.warmup, 1.0)
        for name in names:
            model.loss_scales[name] = scale


class CTKDCurriculumHook(Hook):
    """CTKD's curriculum (Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023,
    arXiv:2211.16231, eq. 11): before every training iteration, the gradient-reversal strength lambda of every
    learned temperature (:class:`~kdplug.losses.ctkd.LearnableTemperature`, e.g. in ``CTKDLoss``) among the
    distiller's losses is set to

        lambda_n = lambda_min + 1/2 (lambda_max - lambda_min) (1 + cos((1 + min(n, loops) / loops) pi))

    with n the epoch counted from 1 (with ``by_epoch=False``, the iteration counted from 1): a half cosine from
    lambda_min (n = 0) to lambda_max (n >= ``loops``). The authors' CIFAR recipe: 0 -> 1 over 10 of 240 epochs
    (5 of 120 on ImageNet), so lambda is 0.0245 during the first epoch and 1 from the tenth on. Derived from the
    loop's position before every iteration, so it is right after a resume too.
    After every epoch the lambda and the temperature (the mean of the last batch) are logged as
    ``ctkd/<loss>/lambda`` and ``ctkd/<loss>/temperature`` (in the text log, and with the next validation's
    scalars). ``losses`` restricts it to the named losses.
    """

    priority = 'NORMAL'
    distillation_only = True  # a hook of the distiller: a student's own config (the export) leaves it out

    def __init__(self, lambda_min: float = 0.0, lambda_max: float = 1.0, loops: float = 10,
                 losses: Optional[Sequence[str]] = None, by_epoch: bool = True) -> None:
        self.lambda_min = check_hyperparameter('lambda_min', lambda_min)
        self.lambda_max = check_hyperparameter('lambda_max', lambda_max)
        self.loops = check_hyperparameter('loops', loops, strict=True)
        self.losses = loss_names('CTKDCurriculumHook', losses)
        self.by_epoch = check_by_epoch('CTKDCurriculumHook', by_epoch)

    def temperatures(self, model) -> dict:
        """Loss name -> its learned temperatures, for the losses this hook drives."""
        losses = getattr(model, 'losses', None)
        if losses is None:
            raise TypeError(f'CTKDCurriculumHook works with a kdplug distiller, not {type(model).__name__}')
        names = list(losses) if self.losses is None else list(self.losses)
        unknown = sorted(set(names) - set(losses))
        if unknown:
            raise KeyError(f'CTKDCurriculumHook: no loss named {unknown} in the distiller; its losses are '
                           f'{sorted(losses)}')
        found = {name: [m for m in losses[name].modules() if isinstance(m, LearnableTemperature)] for name in names}
        if self.losses is not None and not all(found.values()):
            raise ValueError(f'CTKDCurriculumHook: {sorted(n for n, t in found.items() if not t)} learn no '
                             'temperature (use CTKDLoss)')
        found = {name: temps for name, temps in found.items() if temps}
        if not found:
            raise ValueError(f'CTKDCurriculumHook: none of the distiller\'s losses {sorted(losses)} learns a '
                             "temperature: add a CTKDLoss, e.g. losses=dict(ctkd=dict(type='CTKDLoss'))")
        return found

    def value(self, step: float) -> float:
        return cosine_curriculum(step, self.lambda_min, self.lambda_max, self.loops)

    def before_train(self, runner: 'Runner') -> None:
        check_counts_epochs('CTKDCurriculumHook', self.by_epoch, runner)
        for temperatures in self.temperatures(unwrap(runner.model)).values():
            for temperature in temperatures:
                temperature.scheduled = True

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch=None) -> None:
        strength = self.value(runner.epoch + 1 if self.by_epoch else runner.iter + 1)
        for temperatures in self.temperatures(unwrap(runner.model)).values():
            for temperature in temperatures:
                temperature.grl_lambda = strength

    def after_train_epoch(self, runner: 'Runner') -> None:
        scalars = {}
        for name, temperatures in self.temperatures(unwrap(runner.model)).items():
            last = temperatures[0].last_temperature
            scalars[f'ctkd/{name}/lambda'] = temperatures[0].grl_lambda
            if last is not None:
                scalars[f'ctkd/{name}/temperature'] = float(last)
        runner.logger.info('CTKD: ' + '  '.join(f'{key}: {value:.4f}' for key, value in scalars.items()))
        log_with_validation(runner, scalars)


class TeacherDataCheckHook(Hook):
    """Before training, show the teacher source the run's training data (its dataset config and length, and its
    class names): the cached teacher refuses a store made with another pipeline or number of images before the first
    step (:meth:`kdplug.teachers.base.TeacherSource.check_data`, and
    :meth:`~kdplug.teachers.base.TeacherSource.check_schedule` another seed or more epochs than an epochs-mode store
    holds), a checkpoint teacher trained on other classes is
    refused (:meth:`~kdplug.teachers.base.TeacherSource.check_classes`); the task checks the annotations
    (:meth:`kdplug.tasks.base.Task.check_dataset`: labels outside the student's classes). In ``default_hooks`` of
    configs/_base_/distill_runtime.py, where a config's own ``custom_hooks`` do not replace it."""

    priority = 'HIGH'
    distillation_only = True  # a hook of the distiller: a student's own config (the export) leaves it out

    def before_train(self, runner: 'Runner') -> None:
        model = unwrap(runner.model)
        source = getattr(model, 'teacher', None)
        if source is None:
            return
        model.task.check_dataset(runner.train_dataloader.dataset, model.student)
        dataset = (runner.cfg.get('train_dataloader') or {}).get('dataset')
        source.check_data(dataset, len(runner.train_dataloader.dataset))
        from mmengine.runner import EpochBasedTrainLoop
        epochs = runner.train_loop.max_epochs if isinstance(runner.train_loop, EpochBasedTrainLoop) else None
        # the config's seed: runner.seed adds each rank's number under diff_rank_seed (None: mmengine draws one)
        source.check_schedule((runner.cfg.get('randomness') or {}).get('seed'), epochs)
        classes = (getattr(runner.train_dataloader.dataset, 'metainfo', None) or {}).get('classes')
        if classes:
            source.check_classes(tuple(classes))

    def before_save_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        """Record the teacher's :meth:`~kdplug.teachers.base.TeacherSource.identity` in the checkpoint's meta."""
        source = getattr(unwrap(runner.model), 'teacher', None)
        identity = None if source is None else source.identity()
        if identity is not None:
            checkpoint.setdefault('meta', {})['kdplug_teacher'] = {'identity': identity,
                                                                  'description': source.description}

    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        """A resumed run goes on with the teacher it started with: another one (another checkpoint file, a
        retrained teacher under the same path) is refused. ``load_from`` starts a new schedule from the weights and
        may take any teacher."""
        recorded = (checkpoint.get('meta') or {}).get('kdplug_teacher')
        source = getattr(unwrap(runner.model), 'teacher', None)
        if not getattr(runner, '_resume', False) or not isinstance(recorded, dict) or source is None:
            return
        identity = source.identity()
        if identity is not None and identity != recorded.get('identity'):
            raise RuntimeError(
                f'this run resumes a run that learnt from {recorded.get("description")} (sha256 '
                f'{str(recorded.get("identity"))[:16]}...), and {source.description} is another teacher (sha256 '
                f'{identity[:16]}...): the student would go on learning from another network. Resume with the '
                f'teacher the run started with (--cfg-options model.teacher.checkpoint=...), or start a new '
                'schedule from this checkpoint\'s weights with load_from=CHECKPOINT instead of --resume')


class TeacherEvalHook(Hook):
    """Evaluate the teacher once, before training, with the run's validation dataloader and evaluator, and log its
    metrics as ``teacher/<metric>`` (at once in the text log; in scalars.json beside the student's metrics in every
    validation record): a wrong checkpoint shows at once, not after a day of training. Progress is
    logged every ``interval`` batches (``teacher evaluation: 10/40 batches``): on a large validation set this pass
    takes minutes before the first training iteration."""

    priority = 'LOW'
    distillation_only = True  # a hook of the distiller: a student's own config (the export) leaves it out

    def __init__(self, interval: int = 10) -> None:
        self.interval = check_count('TeacherEvalHook', 'interval', interval, 'batches')

    def before_train(self, runner: 'Runner') -> None:
        model = unwrap(runner.model)
        if getattr(model, 'teacher_model', None) is None:  # no teacher network (the weak head, a cache store)
            source = getattr(model, 'teacher', None)
            from kdplug.teachers.cached import CachedTeacher
            cached = isinstance(source, CachedTeacher)
            runner.logger.info(f'TeacherEvalHook: {getattr(source, "description", "the teacher")} is not a network '
                               'to evaluate' + (' (evaluate the checkpoint its store was made from with '
                                                'tools/test.py)' if cached else ''))
            return
        source = getattr(model, 'teacher', None)
        if not getattr(source, 'trained_before_the_run', True):
            runner.logger.info(f'TeacherEvalHook: {source.description} is the student\'s own average, as '
                               'untrained as the student before training: nothing to evaluate (drop the hook)')
            return
        if runner.val_loop is None or runner.val_dataloader is None:
            runner.logger.warning('TeacherEvalHook: the run has no val_dataloader/val_evaluator: teacher not '
                                  'evaluated')
            return
        evaluator = runner.val_loop.evaluator
        try:
            total = len(runner.val_dataloader)
        except TypeError:  # an iterable dataset: count only
            total = None
        runner.model.eval()
        start = time.time()
        with torch.no_grad(), model.predicting_with_teacher():
            for i, data_batch in enumerate(runner.val_dataloader, 1):
                evaluator.process(data_samples=runner.model.val_step(data_batch), data_batch=data_batch)
                if i % self.interval == 0 or i == total:
                    elapsed = time.time() - start
                    left = f', about {elapsed * (total - i) / i:.0f} s left' if total and i < total else ''
                    runner.logger.info(f'teacher evaluation: {i}/{total or "?"} batches ({elapsed:.0f} s{left})')
        metrics = evaluator.evaluate(len(runner.val_dataloader.dataset))
        runner.model.train()
        text = '  '.join(f'{key}: {value:.4f}' if isinstance(value, float) else f'{key}: {value}'
                         for key, value in metrics.items())
        if not metrics:  # mmdet gives {} when nothing was detected: a line ending in ": " said nothing
            runner.logger.warning('teacher (evaluated once before training): the evaluator gave no metrics (mmdet: '
                                  'no detection above test_cfg.rcnn.score_thr on the whole validation set). The '
                                  'teacher checkpoint is probably untrained or of another model: evaluate it alone '
                                  'with tools/test.py')
        else:
            runner.logger.info(f'teacher (evaluated once before training): {text}')
        runner.message_hub.update_info('teacher_metrics', metrics)
        log_with_validation(runner, {f'teacher/{key}': value for key, value in metrics.items()
                                     if isinstance(value, numbers.Real)})


class EMATeacherHook(Hook):
    """Update an EMA self-teacher (``teacher=dict(type='EMATeacher', xi=...)``) after every optimizer step."""

    priority = 'ABOVE_NORMAL'
    distillation_only = True  # a hook of the distiller: a student's own config (the export) leaves it out

    @staticmethod
    def source(runner: 'Runner') -> tuple:
        """The distiller and its EMA teacher source."""
        model = unwrap(runner.model)
        source = getattr(model, 'teacher', None)
        if not callable(getattr(source, 'update', None)):
            raise TypeError(f'EMATeacherHook updates an EMA teacher: {type(model).__name__} has '
                            f'{getattr(source, "description", "no EMA teacher")}; use teacher=dict(type='
                            "'EMATeacher', xi=0.99) or drop the hook")
        return model, source

    def before_train(self, runner: 'Runner') -> None:
        hooks = [hook for hook in runner.hooks if isinstance(hook, EMATeacherHook)]
        if len(hooks) > 1:  # each would average once per step: xi^2 (0.98 for 0.99) where the config says xi
            raise ValueError(f'{len(hooks)} EMATeacherHooks in the run: each updates the EMA teacher after every '
                             'step, so the teacher would average with xi to the power of their number. Keep one (a '
                             'config and its _base_ may both list it in custom_hooks)')
        self.source(runner)[1].hook_attached = True

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.optim_wrapper.should_update():  # with gradient accumulation, only after the step that updated
            model, source = self.source(runner)
            source.update(model.student)


def random_state() -> dict:
    """The main process's random state (Python's, numpy's, torch's CPU generator) in types a weights-only load
    reads back (numpy's key array as a list)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return dict(python=random.getstate(), numpy=(name, keys.tolist(), position, has_gauss, cached),
                torch=torch.get_rng_state())


def set_random_state(state: dict) -> None:
    random.setstate(tuple(item if not isinstance(item, list) else tuple(item) for item in state['python']))
    name, keys, position, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state['torch'])


class RandomStateHook(Hook):
    """Keep the main process's random state in every checkpoint and give it back when an epoch-based run resumes:
    the resumed run then draws the augmentations an uninterrupted run draws. A resumed process started from the
    run's seed, so its first epoch repeated the draws of the run's first epoch: other views than the uninterrupted
    run's, and an epochs-mode teacher cache could not serve them. Exact where the pipeline runs in the main process
    (``num_workers=0``) or in workers mmengine seeds again every epoch (``persistent_workers=False``); persistent
    workers keep a state of their own, which is not saved (a warning says so). An iteration-based run needs nothing:
    mmengine replays its batches from the run's seed up to the resumed iteration."""

    priority = 'LOWEST'  # before_train: after the hooks that use random numbers (the teacher's evaluation)

    def __init__(self) -> None:
        self.resumed_state: Optional[dict] = None

    def before_save_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['random_state'] = random_state()

    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        self.resumed_state = (checkpoint.get('meta') or {}).get('random_state')

    def before_train(self, runner: 'Runner') -> None:
        from mmengine.runner import EpochBasedTrainLoop
        state, self.resumed_state = self.resumed_state, None
        if state is None or runner.iter == 0 or not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return  # load_from (not a resume), or an iteration-based loop
        set_random_state(state)
        loader = runner.train_dataloader
        if getattr(loader, 'persistent_workers', False) and getattr(loader, 'num_workers', 0) > 0:
            runner.logger.warning('RandomStateHook: the dataloader\'s persistent workers keep a random state of their '
                                  'own, which checkpoints do not hold: this resumed run draws other augmentations '
                                  'than an uninterrupted one (train_dataloader.persistent_workers=False makes them '
                                  'the same)')


def write_text_atomically(path: str, text: str) -> None:
    """Write ``path`` so that a reader (or a crash) sees the old content or the new, never a part of it."""
    with replaced_whole(path) as partial, open(partial, 'w') as file:
        file.write(text)


class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same options), with checkpoints that survive a crash at any moment.

    mmengine 0.10.7 writes ``epoch_<n>.pth`` in place and, with ``max_keep_ckpts``, deletes the oldest checkpoint
    *before* writing the new one: a run killed during the write keeps a truncated file and, with
    ``max_keep_ckpts=1``, nothing to resume from. Here (for a local ``out_dir``) each checkpoint is written to
    ``.<name>.partial`` and renamed into place once complete; ``last_checkpoint`` is replaced the same way; old
    checkpoints are deleted only after that, keeping the ``max_keep_ckpts`` newest ``filename_tmpl`` files of the
    folder. Remote back ends keep mmengine's behaviour. Best checkpoints (``save_best``) keep mmengine's order, but
    a resumed run never deletes a best checkpoint outside its own folder: mmengine deletes the previous best by the
    path the checkpoint's message hub recorded, which for a run resumed from another work dir (or a copy of one) is
    a file of that other run.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, **kwargs) -> None:
        super().__init__(*args, max_keep_ckpts=-1, **kwargs)  # pruning is ours, after the new file is complete
        self.keep_newest = max_keep_ckpts

    def before_train(self, runner: 'Runner') -> None:
        super().before_train(runner)
        from mmengine.fileio import LocalBackend
        if self.save_best is None or not isinstance(self.file_backend, LocalBackend):
            return
        own = os.path.realpath(self.out_dir)
        recorded = ([('best_ckpt', self.best_ckpt_path)] if len(self.key_indicators) == 1 else
                    [(f'best_ckpt_{key}', path) for key, path in self.best_ckpt_path_dict.items()])
        for name, path in recorded:
            if path and os.path.dirname(os.path.realpath(path)) != own:
                runner.logger.info(f'the best checkpoint of the resumed run, {path}, is not in this run\'s folder '
                                   f'{self.out_dir}: it stays; this run\'s best checkpoints go to its own folder')
                if name == 'best_ckpt':
                    self.best_ckpt_path = None
                else:
                    self.best_ckpt_path_dict[name[len('best_ckpt_'):]] = None

    def _save_checkpoint_with_step(self, runner: 'Runner', step: int, meta: dict) -> None:
        from mmengine.dist import is_main_process
        from mmengine.fileio import LocalBackend
        if not isinstance(self.file_backend, LocalBackend):
            self.max_keep_ckpts = self.keep_newest
            return super()._save_checkpoint_with_step(runner, step, meta)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        partial = f'.{filename}.partial'
        runner.save_checkpoint(self.out_dir, partial, self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        if not is_main_process():  # only the main process writes files
            return
        os.replace(os.path.join(self.out_dir, partial), self.last_ckpt)
        write_text_atomically(os.path.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if self.keep_newest > 0:
            self._remove_old_checkpoints()

    def _remove_old_checkpoints(self) -> None:
        pattern = re.compile(re.escape(self.filename_tmpl).replace(r'\{\}', r'(\d+)') + '$')
        steps = sorted(int(match.group(1)) for match in map(pattern.match, os.listdir(self.out_dir)) if match)
        for step in steps[:-self.keep_newest]:
            os.remove(os.path.join(self.out_dir, self.filename_tmpl.format(step)))
