"""kdplug's main command-line tools, inside the package so that an installed kdplug has them too:
``kdplug-train`` / ``python -m kdplug.tools.train``, ``kdplug-test``, ``kdplug-export-student``,
``kdplug-cache-teacher``, ``kdplug-fit-codewords``. The repository's ``tools/train.py``, ``tools/test.py``,
``tools/export_student.py``, ``tools/cache_teacher.py`` and ``tools/fit_codewords.py`` run the same code (OpenMMLab's
habit)."""


def read_config(path: str):
    """mmengine's ``Config.fromfile``; a config file that does not exist stops the tool with one line that says so
    (mmengine's FileNotFoundError came with a traceback)."""
    import os

    from mmengine.config import Config
    if not os.path.isfile(path):
        raise SystemExit(f'{path}: no such config file (from {os.getcwd()}); the configs are under configs/, e.g. '
                         'configs/demo/kd_resnet20_resnet8_4e_cifar10-10k.py')
    return Config.fromfile(path)


#: What each launcher of mmengine reads from the environment, and what sets it.
LAUNCHER_ENVIRONMENT = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'torchrun (bash tools/dist_train.sh CONFIG GPUS, or torchrun --nproc-per-node=GPUS tools/train.py '
                'CONFIG --launcher pytorch)'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'), 'srun (bash tools/slurm_train.sh ...)'),
}


def check_launcher(launcher: str) -> None:
    """A launcher's variables must be set: ``--launcher pytorch`` run by hand stopped on a bare KeyError: 'RANK'."""
    names, setter = LAUNCHER_ENVIRONMENT.get(launcher, ((), ''))
    import os
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise SystemExit(f'--launcher {launcher} reads {", ".join(missing)} from the environment, which {setter} '
                         'sets; started without it, leave --launcher out to run one process')


#: The default hooks mmengine's Runner registers by itself (``Runner.register_default_hooks``): only these may be
#: switched off there with None; it answered any other None with a bare ``assert hook is not None``.
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler', 'checkpoint')


def drop_switched_off_hooks(cfg) -> list:
    """Takes out of ``cfg.default_hooks`` the hooks a config or ``--cfg-options`` switches off with None that
    mmengine does not know (kdplug's ``teacher_data``, mmpretrain's and mmdet's ``visualization``), as mmengine
    does for its own; returns their names. ``default_hooks.teacher_data=None`` then runs without the hook."""
    hooks = cfg.get('default_hooks') or {}
    dropped = [name for name, hook in hooks.items() if hook is None and name not in MMENGINE_DEFAULT_HOOKS]
    for name in dropped:
        hooks.pop(name)
    return dropped


def name_damaged_images(cfg) -> None:
    """Every pipeline of ``cfg``'s dataloaders (datasets wrapped in others included) loads its images with
    ``kdplug.CheckedLoadImageFromFile`` where it named mmcv's ``LoadImageFromFile``: same options, same results,
    and an image that cannot be decoded stops the run with an error that names its file and the fix, not OpenCV's
    ``(-215:Assertion failed) !buf.empty()``. Done by the tools, not written in the configs: mmdet's
    ``DetInferencer`` and mmpretrain's inferencer look for a transform named ``LoadImageFromFile`` in a config's
    test pipeline (an exported student's config names it again). A loader of another class under that name
    (another library's own) is left as it is."""
    from mmcv.transforms import LoadImageFromFile
    from mmengine.registry import TRANSFORMS

    from kdplug.transforms.checked_load import dataloader_pipelines

    def mmcv_loader(kind) -> bool:
        if not isinstance(kind, str):
            return kind is LoadImageFromFile
        if kind.split('.')[-1] != 'LoadImageFromFile':
            return False
        try:  # as the Runner would build it: in the run's default scope
            with TRANSFORMS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
                return registry.get(kind) is LoadImageFromFile
        except (KeyError, ImportError):
            return False

    for pipeline in dataloader_pipelines(cfg):
        for transform in pipeline:
            if isinstance(transform, dict) and mmcv_loader(transform.get('type')):
                transform['type'] = 'kdplug.CheckedLoadImageFromFile'


def check_kdplug_types(cfg) -> None:
    """Every ``dict(type='kdplug.X', ...)`` of ``cfg`` names a class of kdplug's registries, and an engine hook's or
    a data transform's keys are its constructor's: mmengine builds those from the run's scope (mmpretrain, mmdet)
    through ``build_from_cfg``, whose KeyError named the run's registry (``not in the mmpretrain::hook registry``),
    no close match, and ``custom_imports``, which kdplug never needs, and whose TypeError named no parameter. Stops
    the tool with kdplug's registry error, prefixed with the key's place in the config."""
    from kdplug.registry import HOOKS, MODELS, TASKS, TEACHERS, TRANSFORMS

    def walk(node, where: str):
        if isinstance(node, (list, tuple)):
            for index, item in enumerate(node):
                yield from walk(item, f'{where}[{index}]')
        elif isinstance(node, dict):
            kind = node.get('type')
            if isinstance(kind, str) and kind.startswith('kdplug.'):
                yield node, kind, where
            for key, value in node.items():
                yield from walk(value, f'{where}.{key}' if where else str(key))

    for node, kind, where in walk(dict(cfg.items()) if hasattr(cfg, 'items') else cfg, ''):
        name = kind[len('kdplug.'):]
        found = [(registry, registry.get(name)) for registry in (HOOKS, TRANSFORMS, MODELS, TASKS, TEACHERS)]
        found = [(registry, cls) for registry, cls in found if cls is not None]
        try:
            if not found:
                expected = HOOKS if 'hooks' in where else TRANSFORMS if 'pipeline' in where or 'transforms' in \
                    where else MODELS
                raise expected.unknown_type(kind)
            registry, cls = found[0]
            if registry in (HOOKS, TRANSFORMS):  # the others are built by kdplug's registries, which check keys
                options = {key: value for key, value in node.items() if key not in ('type', '_scope_')}
                registry.check_keys(cls, kind, options)
        except (KeyError, TypeError) as err:
            raise SystemExit(f'{where}: {err}') from err
