"""The keys of the config sections mmengine's Runner builds by itself, checked before anything is built.

mmengine passes the training loop's, the dataloaders', the optimizer's, the schedulers', the hooks' and the metrics'
keys to their classes when it builds them: a misspelt key (``train_cfg.max_epoch``, ``train_dataloader.batchsize``,
``optimizer.learning_rate``) stopped the run after the models and the data were built, on a bare TypeError with no
close match; a hook under a misspelt name (``default_hooks.checkpont.interval=1``) on ``KeyError: '`cfg` or
`default_args` must contain the key "type"'``; and the optimizer constructor's ``paramwise_cfg`` and a key at the
top of the config that nobody reads (``param_schedulers``) were ignored without a word. kdplug's own types check
their keys when they are built (:meth:`kdplug.registry.PluginRegistry.check_keys`); these are mmengine's.
"""
import difflib
import inspect
import os
import sys
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple

#: The keys mmengine's ``Runner.build_dataloader`` takes out of a dataloader's config before the rest goes to torch's
#: ``DataLoader``, and those it passes to ``DataLoader`` itself.
DATALOADER_KEYS_OF_MMENGINE = ('dataset', 'sampler', 'batch_sampler', 'collate_fn', 'worker_init_fn',
                               'num_batch_per_epoch', 'disable_subprocess_warning')
#: The keys of ``paramwise_cfg`` that mmengine's ``DefaultOptimWrapperConstructor`` reads; it ignores any other.
PARAMWISE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult', 'dwconv_decay_mult',
                  'flat_decay_mult', 'bypass_duplicate', 'dcn_offset_lr_mult')
#: The keys of one ``paramwise_cfg.custom_keys`` entry that the constructor reads.
CUSTOM_KEY_KEYS = ('lr_mult', 'decay_mult')
#: The keys ``Runner.from_cfg`` reads from the top of a config (mmengine 0.10). A config holds other names too (its
#: pipelines, ``data_root``, ``max_epochs``), so only a near miss of one of these is reported.
RUNNER_KEYS = ('model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg', 'val_cfg',
               'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
               'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher', 'env_cfg',
               'log_processor', 'log_level', 'visualizer', 'default_scope', 'randomness', 'experiment_name')
#: Keys every mmengine registry's ``build`` takes out of a config itself.
BUILD_KEYS = ('type', '_scope_')


#: mmengine's scheduler mixins, whose ``__init__(optimizer, *args, **kwargs)`` hands everything on to the next
#: class's with ``param_name`` set: their schedulers take that class's options.
FORWARDING_MIXINS = {'LRSchedulerMixin': 'param_name', 'MomentumSchedulerMixin': 'param_name'}


def accepted_keys(target: Callable) -> Optional[List[str]]:
    """The keyword options ``target`` (a class or a function) takes; None when it takes any (``**kwargs``) or has no
    signature to read: nothing can then be called unknown."""
    set_by_mixin = []
    if isinstance(target, type):
        for cls in target.__mro__:
            if '__init__' in vars(cls) and cls.__name__ not in FORWARDING_MIXINS:
                target = cls.__init__
                break
            if cls.__name__ in FORWARDING_MIXINS:
                set_by_mixin.append(FORWARDING_MIXINS[cls.__name__])
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != 'self'
            and p.name not in set_by_mixin]


def resolve(registry, kind: Any, scope: Optional[str]) -> Optional[Callable]:
    """The class a ``type`` names, looked up as the Runner will (in the run's default scope); None when it cannot be
    found here (then mmengine's own error speaks when it builds it)."""
    if not isinstance(kind, str):
        return kind if callable(kind) else None
    try:
        with registry.switch_scope_and_registry(scope) as scoped:
            return scoped.get(kind)
    except Exception:  # noqa: BLE001 - a scope that cannot be imported here: mmengine says why when it builds
        return None


def unknown_key_problems(where: str, options: Mapping, takes: Optional[Sequence[str]], name: str,
                         passed: Sequence[str] = ()) -> List[str]:
    """One sentence per key of ``options`` that is not among ``takes`` (None: anything goes), with the closest one;
    ``passed``: the keys mmengine gives the class itself, which a config must not set."""
    if takes is None:
        return []
    takes = [key for key in takes if key not in passed]
    problems = []
    for key in options:
        if key in BUILD_KEYS or key in takes:
            continue
        close = difflib.get_close_matches(key, takes, n=1, cutoff=0.6)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        what = 'is set by mmengine itself, not by the config' if key in passed else f'is not an option of {name}'
        problems.append(f'{where}.{key}: {key!r} {what}.{hint} It takes: {", ".join(takes) or "no options"}')
    return problems


def class_key_problems(where: str, options: Mapping, target: Optional[Callable], passed: Sequence[str] = ()
                       ) -> List[str]:
    """:func:`unknown_key_problems` against the signature of ``target`` (None: not found here, nothing checked)."""
    if target is None:
        return []
    return unknown_key_problems(where, options, accepted_keys(target),
                                getattr(target, '__qualname__', repr(target)), passed)


def typed_sections(cfg: Mapping) -> Iterator[Tuple[str, Any, Mapping, Sequence[str]]]:
    """(where, registry, its config, the keys mmengine passes itself) of each built-by-type dict of the hooks, the
    schedulers and the metrics."""
    from mmengine.registry import HOOKS, METRICS, PARAM_SCHEDULERS
    for name, hook in (cfg.get('default_hooks') or {}).items():
        if isinstance(hook, Mapping) and 'type' in hook:
            yield f'default_hooks.{name}', HOOKS, hook, ()
    for index, hook in enumerate(cfg.get('custom_hooks') or []):
        if isinstance(hook, Mapping):
            yield f'custom_hooks[{index}]', HOOKS, hook, ()
    schedulers = cfg.get('param_scheduler')
    schedulers = [schedulers] if isinstance(schedulers, Mapping) else schedulers or []
    for index, scheduler in enumerate(schedulers):
        if isinstance(scheduler, Mapping):  # convert_to_iter_based: mmengine's build_scheduler_from_cfg reads it
            options = {key: value for key, value in scheduler.items() if key != 'convert_to_iter_based'}
            yield f'param_scheduler[{index}]', PARAM_SCHEDULERS, options, ('optimizer', )
    for section in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(section)
        prefix, metrics = (f'{section}.metrics', evaluator['metrics']) if isinstance(evaluator, Mapping) and \
            'metrics' in evaluator else (section, evaluator)
        if isinstance(metrics, Mapping):
            yield prefix, METRICS, metrics, ()
        else:
            for index, metric in enumerate(metrics or []):
                if isinstance(metric, Mapping):
                    yield f'{prefix}[{index}]', METRICS, metric, ()


def loop_problems(cfg: Mapping) -> List[str]:
    from mmengine.registry import LOOPS
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop
    scope, problems = cfg.get('default_scope'), []
    defaults = dict(train_cfg=None, val_cfg=ValLoop, test_cfg=TestLoop)
    for section, default in defaults.items():
        loop = cfg.get(section)
        if not isinstance(loop, Mapping):
            continue
        if 'type' in loop:
            target = resolve(LOOPS, loop['type'], scope)
        elif section == 'train_cfg':
            if 'by_epoch' not in loop:
                problems.append('train_cfg: it needs by_epoch=True (epochs: EpochBasedTrainLoop, max_epochs=...) or '
                                'by_epoch=False (iterations: IterBasedTrainLoop, max_iters=...), or a type')
                continue
            target = EpochBasedTrainLoop if loop['by_epoch'] else IterBasedTrainLoop
        else:
            target = default
        options = {key: value for key, value in loop.items() if key != 'by_epoch' or 'type' in loop}
        passed = ('runner', 'dataloader') if section == 'train_cfg' else ('runner', 'dataloader', 'evaluator')
        problems += class_key_problems(section, options, target, passed=passed)
    return problems


def dataloader_problems(cfg: Mapping) -> List[str]:
    from mmengine.registry import DATA_SAMPLERS
    from torch.utils.data import DataLoader
    problems = []
    for section in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(section)
        if not isinstance(loader, Mapping):
            continue
        for needed, example in (('dataset', 'dict(type=..., data_root=..., pipeline=...)'),
                                ('sampler', f'dict(type=\'DefaultSampler\', shuffle={section == "train_dataloader"})')):
            if needed not in loader:
                problems.append(f'{section}: it has no {needed} (mmengine builds the loader from it): add '
                                f'{needed}={example}')
        takes = [*DATALOADER_KEYS_OF_MMENGINE, *(key for key in accepted_keys(DataLoader) or ()
                                                 if key not in DATALOADER_KEYS_OF_MMENGINE)]
        problems += unknown_key_problems(section, loader, takes, 'torch\'s DataLoader or mmengine\'s dataloader')
        sampler = loader.get('sampler')
        if isinstance(sampler, Mapping) and 'type' in sampler:
            problems += class_key_problems(f'{section}.sampler', sampler,
                                           resolve(DATA_SAMPLERS, sampler['type'], cfg.get('default_scope')),
                                           passed=('dataset', 'seed'))
    return problems


def optimizer_problems(cfg: Mapping) -> List[str]:
    from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, Mapping):
        return []
    scope, problems = cfg.get('default_scope'), []
    if wrapper.get('constructor', 'DefaultOptimWrapperConstructor') not in ('DefaultOptimWrapperConstructor',
                                                                             'mmengine.DefaultOptimWrapperConstructor'):
        return []  # another constructor reads its own keys
    optimizer = wrapper.get('optimizer')
    if isinstance(optimizer, Mapping) and 'type' in optimizer:
        problems += class_key_problems('optim_wrapper.optimizer', optimizer,
                                       resolve(OPTIMIZERS, optimizer['type'], scope), passed=('params', ))
    options = {key: value for key, value in wrapper.items() if key not in ('optimizer', 'paramwise_cfg', 'constructor')}
    problems += class_key_problems('optim_wrapper', options,
                                   resolve(OPTIM_WRAPPERS, wrapper.get('type', 'OptimWrapper'), scope),
                                   passed=('optimizer', ))
    paramwise = wrapper.get('paramwise_cfg')
    if isinstance(paramwise, Mapping):
        problems += unknown_key_problems('optim_wrapper.paramwise_cfg', paramwise, PARAMWISE_KEYS,
                                         'paramwise_cfg (mmengine\'s DefaultOptimWrapperConstructor ignored it)')
        for key, entry in (paramwise.get('custom_keys') or {}).items():
            if isinstance(entry, Mapping):
                problems += unknown_key_problems(f'optim_wrapper.paramwise_cfg.custom_keys[{key!r}]', entry,
                                                 CUSTOM_KEY_KEYS, 'a custom_keys entry (mmengine ignored it)')
    return problems


def hook_name_problems(cfg: Mapping) -> List[str]:
    """A ``default_hooks`` entry without a type: a name that is none of the hooks (``checkpont``), so the option
    given for it made a dict of its own."""
    hooks = cfg.get('default_hooks') or {}
    named = [name for name, hook in hooks.items() if isinstance(hook, Mapping) and 'type' in hook]
    problems = []
    for name, hook in hooks.items():
        if isinstance(hook, Mapping) and 'type' not in hook:
            close = difflib.get_close_matches(name, named, n=1, cutoff=0.6)
            hint = f'did you mean default_hooks.{close[0]}? ' if close else ''
            problems.append(f'default_hooks.{name}: no hook of this config has that name, so its options '
                            f'({", ".join(hook)}) build nothing: {hint}The hooks: {", ".join(named)}; a new one '
                            'needs a type')
    return problems


def check_runner_keys(cfg: Mapping) -> None:
    """Stops the tool with one line per misspelt or misplaced key of the sections mmengine's Runner builds, and
    prints (rank 0) a warning per key at the top of the config that the Runner does not read but nearly does."""
    problems = loop_problems(cfg) + dataloader_problems(cfg) + optimizer_problems(cfg) + hook_name_problems(cfg)
    scope = cfg.get('default_scope')
    for where, registry, options, passed in typed_sections(cfg):
        kind = options.get('type')
        if isinstance(kind, str) and kind.startswith('kdplug.'):
            continue  # kdplug's own types: kdplug.tools.check_kdplug_types
        problems += class_key_problems(where, options, resolve(registry, kind, scope), passed=passed)
    if problems:
        raise SystemExit('the config does not fit what mmengine\'s Runner builds from it (fix it in the config or '
                         'with --cfg-options; a key of a _base_ config\'s dict stays unless the dict says '
                         '_delete_=True):\n  ' +
                         '\n  '.join(problems))
    if int(os.environ.get('RANK', '0')) == 0:
        for warning in unread_top_level_keys(cfg):
            print(f'warning: {warning}', file=sys.stderr, flush=True)


def unread_top_level_keys(cfg: Mapping) -> List[str]:
    """A warning per key at the top of ``cfg`` that the Runner does not read but that is one letter or two from one
    it does (``param_schedulers``, ``default_hook``): its value is ignored."""
    warnings = []
    for key in cfg:
        if key in RUNNER_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, RUNNER_KEYS, n=1, cutoff=0.85)
        if close:
            warnings.append(f'the config key {key!r} is read by nothing (mmengine\'s Runner reads {close[0]!r}): its '
                            'value is ignored; rename it if it was meant for the Runner')
    return warnings

