"""mmengine hooks of kdplug, contributed through the ``kdplug_engine_hooks`` plugin hook."""
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
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
    metrics as ``teacher/<metric>``: a wrong checkpoint shows at once, not after a day of training."""

    priority = 'LOW'

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        if getattr(model, 'teacher', None) is None:
            return
        if runner.val_loop is None or runner.val_dataloader is None:
            runner.logger.warning('TeacherEvalHook: the run has no val_dataloader/val_evaluator: teacher not '
                                  'evaluated')
            return
        evaluator = runner.val_loop.evaluator
        runner.model.eval()
        with torch.no_grad(), model.predicting_with_teacher():
            for data_batch in runner.val_dataloader:
                evaluator.process(data_samples=runner.model.val_step(data_batch), data_batch=data_batch)
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
