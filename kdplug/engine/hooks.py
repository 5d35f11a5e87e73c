"""mmengine hooks of kdplug, contributed through the ``kdplug_engine_hooks`` plugin hook."""
import os
import re
import time
from typing import Optional, Sequence

import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


class LossWarmupHook(Hook):
    """Ramp distillation losses in: scale = min(epoch / warmup_epochs, 1), counting epochs from 1 (DKD's warm-up,
    Zhao et al. 2022: 20 epochs on CIFAR-100, 1 on ImageNet). With ``by_epoch=False`` the ramp is per iteration.

    The scale is derived from the loop's position before every iteration, so it is right after a resume too.
    """

    priority = 'NORMAL'

    def __init__(self, warmup: int, losses: Optional[Sequence[str]] = None, by_epoch: bool = True) -> None:
        if warmup < 1:
            raise ValueError(f'warmup must be >= 1 {"epoch" if by_epoch else "iteration"}, got {warmup}')
        self.warmup, self.losses, self.by_epoch = int(warmup), losses, by_epoch

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
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


class TeacherEvalHook(Hook):
    """Evaluate the teacher once, before training, with the run's validation dataloader and evaluator, and log its
    metrics as ``teacher/<metric>``: a wrong checkpoint shows at once, not after a day of training. Progress is
    logged every ``interval`` batches (``teacher evaluation: 10/40 batches``): on a large validation set this pass
    takes minutes before the first training iteration."""

    priority = 'LOW'

    def __init__(self, interval: int = 10) -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1 batch, got {interval}')
        self.interval = int(interval)

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        if getattr(model, 'teacher', None) is None:
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
        runner.logger.info(f'teacher (evaluated once before training): {text}')
        runner.message_hub.update_info('teacher_metrics', metrics)
        runner.visualizer.add_scalars({f'teacher/{key}': value for key, value in metrics.items()
                                       if isinstance(value, (int, float))}, step=runner.iter)


class EMATeacherHook(Hook):
    """Update an EMA self-teacher (``kdplug.EMADistiller``) after every optimizer step."""

    priority = 'ABOVE_NORMAL'

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        if not hasattr(model, 'update_teacher'):
            raise TypeError(f'EMATeacherHook works with kdplug.EMADistiller, not {type(model).__name__}')
        model.hook_attached = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.optim_wrapper.should_update():  # with gradient accumulation, only after the step that updated
            unwrap(runner.model).update_teacher()


def write_text_atomically(path: str, text: str) -> None:
    """Write ``path`` so that a reader (or a crash) sees the old content or the new, never a part of it."""
    partial = f'{path}.partial'
    with open(partial, 'w') as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same options), with checkpoints that survive a crash at any moment.

    mmengine 0.10.7 writes ``epoch_<n>.pth`` in place and, with ``max_keep_ckpts``, deletes the oldest checkpoint
    *before* writing the new one: a run killed during the write keeps a truncated file and, with
    ``max_keep_ckpts=1``, nothing to resume from. Here (for a local ``out_dir``) each checkpoint is written to
    ``.<name>.partial`` and renamed into place once complete; ``last_checkpoint`` is replaced the same way; old
    checkpoints are deleted only after that, keeping the ``max_keep_ckpts`` newest ``filename_tmpl`` files of the
    folder. Remote back ends keep mmengine's behaviour. Best checkpoints (``save_best``) keep mmengine's order.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, **kwargs) -> None:
        super().__init__(*args, max_keep_ckpts=-1, **kwargs)  # pruning is ours, after the new file is complete
        self.keep_newest = max_keep_ckpts

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
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
