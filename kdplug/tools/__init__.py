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
