"""Student-only export: a distillation run's checkpoint -> a checkpoint that plain mmpretrain / mmdet loads, and the
student's own config beside it.

The distiller's state dict holds ``student.*`` and, for some teacher sources, training-only state (an EMA teacher's
``teacher.ema.*``, USKD's weak head ``teacher.head.*``; a checkpoint teacher is never saved), which is dropped: the
export is exactly the student model. :func:`student_config` turns the run's config into the student's own, for the
libraries' inferencers and test tools (``ImageClassificationInferencer``, ``DetInferencer``, ``init_detector``).
"""
import copy
import os
from typing import Any, Dict, Optional

import torch

import kdplug
from kdplug.engine.checkpoint import load_checkpoint_file, replaced_whole

PREFIX = 'student.'
#: The first line of the config an export writes: an existing file that does not start with it is not replaced.
CONFIG_HEADER = "# The student's own config, written by kdplug's export_student"


def written_by_an_export(path: str) -> bool:
    """Whether the existing file ``path`` is one an export wrote (a student's weights or its config), which a new
    export may replace: a run's config dump or checkpoint, or a user's config, is not."""
    if path.endswith('.py'):
        with open(path, encoding='utf-8', errors='replace') as file:
            return file.readline().startswith(CONFIG_HEADER)
    try:
        loaded = load_checkpoint_file(path, role='the existing output')
    except (OSError, RuntimeError):
        return False
    return isinstance(loaded, dict) and isinstance(loaded.get('meta'), dict) and 'exported_from' in loaded['meta']


def export_student(checkpoint: str, out: str, config_out: Optional[str] = None, config: Any = None,
                   force: bool = False) -> Dict[str, Any]:
    """Write the student of ``checkpoint`` to ``out`` as ``{'state_dict', 'meta'}``; returns what was written. With
    ``config_out``, also the student's own config there (:func:`student_config`) from ``config``, the run's config,
    by default the one mmengine saved in the checkpoint. A plain run's checkpoint (no ``student.*``: a teacher's)
    gives its weights as they are and the run's config (:func:`inference_config`). An existing file that an export
    did not write (a run's config dump, a checkpoint, a config of the user's) is replaced only with ``force``."""
    if os.path.exists(out) and os.path.exists(checkpoint) and os.path.samefile(out, checkpoint):
        raise ValueError(f'{out!r} is the checkpoint to export: writing the student there would replace the run\'s '
                         'checkpoint (its optimizer, teacher and training state). Give another output path')
    for path in (out, config_out):
        if path is not None and os.path.isdir(path):
            raise ValueError(f'{path!r} is a folder: give the path of the file to write (e.g. {path}/student.pth)')
        if path is not None and os.path.exists(path) and not force and not written_by_an_export(path):
            raise ValueError(f'{path!r} exists and is not a file an export wrote (a run\'s config or checkpoint, or '
                             'a config of yours): it stays. Give another output name, or --force to replace it')
    loaded = load_checkpoint_file(checkpoint, role='distillation run')
    state_dict = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise ValueError(f'{checkpoint!r} holds no state dict of weights: give an epoch_<n>.pth / iter_<n>.pth that '
                         'an mmengine run wrote')
    # a plain mmpretrain / mmdet run (a teacher): its weights as they are, without the training state (the
    # optimizer, mmengine's message hub), which torch's weights-only loading in the libraries' inferencers refuses
    distilled = any(key.startswith(PREFIX) for key in state_dict)
    student = {key[len(PREFIX):]: value for key, value in state_dict.items() if key.startswith(PREFIX)} \
        if distilled else dict(state_dict)
    meta = dict(loaded.get('meta') or {})
    own_config = None
    if config_out is not None:  # before anything is written: a config that cannot become the student's stops here
        config = config if config is not None else run_config_of(meta)
        if config is None:
            raise ValueError(f'{checkpoint!r} holds no config (mmengine saves the run\'s in its meta): give the run\'s '
                             'config with --config, or --no-config for the weights alone')
        own_config = student_config(config) if distilled else inference_config(config)
    exported = {
        'state_dict': student,
        'meta': {
            'dataset_meta': meta.get('dataset_meta'),
            'epoch': meta.get('epoch'),
            'iter': meta.get('iter'),
            'exported_from': checkpoint,
            'kdplug_version': kdplug.__version__,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with replaced_whole(out) as partial:  # whole or not at all: an interrupted export leaves no truncated file
        torch.save(exported, partial)
    if own_config is not None:
        with replaced_whole(config_out) as partial:
            with open(partial, 'w', encoding='utf-8') as f:
                f.write(f'{CONFIG_HEADER} from {checkpoint}: tools/test.py and the inferencers take it with '
                        f'{os.path.basename(out)}\n{own_config.pretty_text}')
    return exported


def student_config(cfg: Any) -> Any:
    """The student's own config (an mmengine ``Config``) from a distillation run's ``cfg``: ``model`` is the student
    (its ``cfg_path`` resolved) with the distiller's data preprocessor as its library infers with it
    (:meth:`~kdplug.tasks.base.Task.inference_data_preprocessor`), ``default_scope`` the task's library
    (``mmpretrain``, ``mmdet``), and the hooks only a distiller runs (``distillation_only``: the teacher's checks and
    evaluation, loss warm-up, CTKD's curriculum, the EMA teacher's update) are left out, and so are the run's
    ``resume``, ``load_from``, ``work_dir`` and launcher. Data, schedule, evaluator and visualizer stay the run's:
    the config is for inference and testing; training the student again from it keeps the run's settings (its
    cross-entropy weight, a MultiView training pipeline), which a student's own recipe would set anew."""
    from mmengine.config import Config

    from kdplug.registry import HOOKS, TASKS
    from kdplug.transforms.checked_load import dataloader_pipelines
    model = cfg.get('model') or {}
    if str(model.get('type', '')).split('.')[-1] != 'Distiller':
        raise ValueError(f'the config\'s model is {model.get("type")!r}, not kdplug.Distiller: it is already a '
                         'student\'s (or another model\'s) config')
    task_cfg = model['task']
    task = TASKS.build(dict(type=task_cfg) if isinstance(task_cfg, str) else copy.deepcopy(dict(task_cfg)))
    student = task.model_config(model['student'])
    # the distiller's preprocessor as the run built it: mmengine's Runner gives a model without one the config's
    # top-level data_preprocessor (mmpretrain's configs keep mean / std there)
    student['data_preprocessor'] = task.inference_data_preprocessor(task.data_preprocessor(
        model.get('data_preprocessor') or cfg.get('data_preprocessor'), student))
    out = Config(copy.deepcopy(cfg.to_dict()))
    out.model = student
    if 'data_preprocessor' in out:  # mmengine's Runner would give it to a model without one: the same
        out.data_preprocessor = copy.deepcopy(student['data_preprocessor'])
    # what the run was, not what the student is: a resumed run's resume / load_from, its work dir and launcher
    out.resume, out.load_from, out.launcher = False, None, 'none'
    out.pop('work_dir', None)
    if task.scope:
        out.default_scope = task.scope
    # mmcv's loader by its name, which mmdet's and mmpretrain's inferencers look for in the test pipeline (kdplug's
    # tools check the images again: kdplug.tools.name_damaged_images)
    for pipeline in dataloader_pipelines(out):
        for transform in pipeline:
            if isinstance(transform, dict) and transform.get('type') == 'kdplug.CheckedLoadImageFromFile':
                transform['type'] = 'LoadImageFromFile'

    def distiller_only(hook: Any) -> bool:
        kind = hook.get('type') if isinstance(hook, dict) else hook
        found = HOOKS.get(kind.split('.', 1)[-1] if isinstance(kind, str) and kind.startswith('kdplug.') else kind) \
            if isinstance(kind, str) else kind
        return bool(getattr(found, 'distillation_only', False))
    hooks = out.get('default_hooks') or {}
    for name in [name for name, hook in hooks.items() if hook is not None and distiller_only(hook)]:
        hooks.pop(name)
    if out.get('custom_hooks'):
        out.custom_hooks = [hook for hook in out.custom_hooks if not distiller_only(hook)]
    return out


def inference_config(cfg: Any) -> Any:
    """A plain run's config (a teacher's) for inference and testing: the run's, without its ``resume``,
    ``load_from``, work dir and launcher."""
    from mmengine.config import Config
    if str((cfg.get('model') or {}).get('type', '')).split('.')[-1] == 'Distiller':
        raise ValueError('the config\'s model is a kdplug.Distiller, and the checkpoint holds no "student.*" weights: '
                         'give the config of the run that wrote it (--config)')
    out = Config(copy.deepcopy(cfg.to_dict()))
    out.resume, out.load_from, out.launcher = False, None, 'none'
    out.pop('work_dir', None)
    return out


def run_config_of(checkpoint_meta: Optional[dict]) -> Optional[Any]:
    """The run's config that mmengine saved in a checkpoint's ``meta['cfg']`` (its text), or None."""
    from mmengine.config import Config
    text = (checkpoint_meta or {}).get('cfg')
    return Config.fromstring(text, '.py') if isinstance(text, str) and text.strip() else None
