"""CachedTeacher: the teacher's logits read from a store that ``tools/cache_teacher.py`` wrote, never computed::

    teacher=dict(type='CachedTeacher', store='work_dirs/teacher_cache',
                 model=dict(type='ImageClassifier', ...), checkpoint='work_dirs/teacher/epoch_240.pth')

``model`` and ``checkpoint`` are the teacher the store must have been made from (nothing is built from them: they
identify it). Each training image brings its dataset index (``sample_idx``) and the view its replayable transforms
drew (``view``: ``kdplug.ReplayRandomCrop`` / ``ReplayRandomFlip`` / ``ReplayRandomResizedCrop`` and
``PackInputs(meta_keys=(..., 'view'))``); the source returns the row the store holds for exactly that (image, view).

Refused at build, with what differs: a store made from another checkpoint (sha256) or teacher config, another class
count or input normalisation, an incomplete or damaged store, in ``epochs`` mode another number of processes; before
training (``kdplug.TeacherDataCheckHook``, :meth:`CachedTeacher.check_data`): another training pipeline, dataset
(type, split, prefix, annotation file, subset: not its data_root) or number of images. Refused at the step that
meets it: an image outside the store, or of another file or label than the store's (another dataset, subset or
split; labels on an accelerator at the first step and every
:attr:`CachedTeacher.LABEL_CHECK_INTERVAL`), a view it does not hold (another pipeline, or in ``epochs`` mode
another seed / sampler / batch size / workers). It never falls back to a teacher network. Rows are images
(a task of :attr:`~kdplug.tasks.base.Task.image_rows`: ClassificationTask, one view); a detector's RoIs, or losses
on the teacher's features, are refused at build (:func:`check_cacheable`).
"""
import inspect
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from kdplug.engine.checkpoint import checkpoint_identity
from kdplug.tasks.base import StudentOutput, Task, check_model_config, swaps_channels

from .base import DEVICE_READ_INTERVAL, TeacherSource
from .cache_store import TeacherCacheError, TeacherCacheStore, as_json


def preprocess_summary(data_preprocessor: nn.Module) -> Dict[str, Any]:
    """What the teacher's inputs depend on in the data preprocessor: normalisation and channel order."""
    def values(name: str) -> Optional[List[float]]:
        tensor = getattr(data_preprocessor, name, None)
        return None if tensor is None else [round(float(v), 4) for v in tensor.flatten()]
    return {'mean': values('mean'), 'std': values('std'),
            'to_rgb': swaps_channels(data_preprocessor)}


def made_from(task: Task, model_cfg: dict, checkpoint: str, data_preprocessor: nn.Module) -> Dict[str, Any]:
    """What a store records about its teacher and inputs, and what a run compares with it (JSON-comparable)."""
    return {'teacher_checkpoint': checkpoint_identity(checkpoint),
            'teacher_model': as_json(task.model_config(model_cfg)),
            'preprocess': preprocess_summary(data_preprocessor)}


def pixel_pipeline(pipeline: Optional[Sequence[Mapping[str, Any]]]) -> List[Any]:
    """The transforms that make a view's pixels, as the store's header gives them back: the pipeline without its
    final packer (``PackInputs``, whose meta keys change no pixel)."""
    transforms = as_json(list(pipeline or []))
    if transforms and str(transforms[-1].get('type', '')).split('.')[-1].startswith('Pack'):
        transforms = transforms[:-1]
    return transforms


#: Dataset settings that do not change which image sits at which index: where the data lies (a store moves with its
#: data to another root; each image is still checked by file and label at its step) and how it is held in memory.
WHERE_NOT_WHAT = ('pipeline', 'data_root', 'lazy_init', 'serialize_data', 'max_refetch')


def dataset_defaults(type_name: Any) -> Dict[str, Any]:
    """The keyword defaults of a dataset class, found in the registry of the current scope; none when it is not
    found (then the configs are compared as written)."""
    from mmengine.registry import DATASETS
    try:
        with DATASETS.switch_scope_and_registry(None) as registry:  # the run's default scope, as the Runner builds
            cls = registry.get(type_name) if isinstance(type_name, str) else type_name
        parameters = inspect.signature(cls.__init__).parameters.values() if inspect.isclass(cls) else ()
    except (KeyError, ValueError, TypeError):  # an unknown or unregistered type: nothing to fill in
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def dataset_identity(dataset: Optional[Mapping[str, Any]]) -> Any:
    """A dataset config (wrappers' inner datasets too) as the store's header gives it back, each dataset's absent
    keys given their class's defaults (``ann_file=''`` written or not is one dataset), without the settings of
    :data:`WHERE_NOT_WHAT`: what decides the image at each index (type, split, prefix, annotation file, subset)."""
    def strip(value: Any) -> Any:
        if isinstance(value, Mapping):
            value = {**as_json(dataset_defaults(value.get('type'))), **value} if 'type' in value else value
            return {key: strip(item) for key, item in value.items() if key not in WHERE_NOT_WHAT}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value
    return strip(as_json(dict(dataset or {})))


def sample_labels(data_samples: Sequence) -> List[List[int]]:
    """Each data sample's label(s) as ints, copied off the device in one transfer (the preprocessor moved them
    there: one copy per sample would wait on the device once per sample)."""
    labels = [torch.as_tensor(s.gt_label).flatten() for s in data_samples]
    values = torch.cat(labels).cpu().tolist()
    ends = torch.tensor([label.numel() for label in labels]).cumsum(0).tolist()
    return [values[end - label.numel():end] for label, end in zip(labels, ends)]


def check_cacheable(task: Task, feature_losses: Sequence[str] = ()) -> None:
    """Refuse, naming why and what to do instead, a distillation that no store can serve: one whose task distils
    rows the student picks (not :attr:`Task.image_rows`), or whose losses (``feature_losses``) learn from the
    teacher network's features (a store holds logits only)."""
    if not task.image_rows:
        raise TeacherCacheError(f'{type(task).__name__} distils rows that the student picks at each step (e.g. a '
                                'detector\'s RoIs), not one row per image: a teacher cache holds one row per image '
                                'view, so it cannot serve them. Distil with the online teacher (CheckpointTeacher)')
    if feature_losses:
        raise TeacherCacheError(f'the losses {list(feature_losses)} learn from the teacher network\'s features, and '
                                'a teacher cache holds its logits only. Distil with the online teacher '
                                '(CheckpointTeacher)')


class CachedTeacher(TeacherSource):

    def __init__(self, store: str, model: dict, checkpoint: str) -> None:
        super().__init__()
        check_model_config(model, 'model.teacher.model: the teacher\'s')
        self.store_path, self.model_cfg, self.checkpoint = str(store), dict(model), str(checkpoint)
        self._identity: Optional[str] = None  # identity(): read when a checkpoint first records it
        self.description = f'the cached teacher ({self.store_path})'
        self.store: Optional[TeacherCacheStore] = None

    def setup_to_evaluate(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        """Nothing: the store and the teacher checkpoint are not needed to evaluate the student."""

    def setup(self, task: Task, student: nn.Module, data_preprocessor: nn.Module) -> None:
        check_cacheable(task)
        if getattr(data_preprocessor, 'batch_augments', None) is not None:
            raise TeacherCacheError('the student\'s batch augments (mixup / cutmix) mix images after the pipeline: '
                                    'the cache holds the teacher\'s logits of unmixed views, so it cannot serve them. '
                                    'Drop the batch augments or distil with CheckpointTeacher')
        store = TeacherCacheStore.open(self.store_path)
        recorded = store.header.get('made_from', {})
        if '://' not in self.checkpoint and not os.path.isfile(self.checkpoint):  # not "another checkpoint"
            raise TeacherCacheError(f'the teacher checkpoint {self.checkpoint!r} does not exist: the cached teacher '
                                    'reads it once, to compare its sha256 with that of the checkpoint the store was '
                                    f'made from ({str(recorded.get("teacher_checkpoint"))[:12]}...). Give '
                                    'model.teacher.checkpoint the path of that file')
        ours = made_from(task, self.model_cfg, self.checkpoint, data_preprocessor)
        self._identity = ours['teacher_checkpoint']  # read once: the checkpoints record it (identity)
        for key in ('teacher_checkpoint', 'teacher_model', 'preprocess'):
            if recorded.get(key) != ours[key]:
                raise TeacherCacheError(
                    f'the teacher cache {self.store_path} was made from another {key.replace("_", " ")}: '
                    f'{recorded.get(key)!r} there, {ours[key]!r} here. Make the store again with '
                    'tools/cache_teacher.py from this config, or point store= at the one made from it')
        if store.header['mode'] == 'epochs':
            from mmengine.dist import get_world_size
            made, here = int(store.header.get('world_size', 1)), get_world_size()
            if made != here:
                raise TeacherCacheError(
                    f'the teacher cache {self.store_path} holds the views that a run in {made} process(es) draws '
                    f'(epochs mode); this run has {here}: each process draws its own shard of every epoch, so train '
                    f'with {made} process(es), or make the store again under this launcher (or in views mode)')
        classes = task.num_classes(student)
        if classes is not None and classes != store.header['num_classes']:
            raise TeacherCacheError(f'the teacher cache {self.store_path} holds {store.header["num_classes"]} '
                                    f'classes, the student predicts {classes}')
        self.store = store
        self.data_checked = False
        self.steps = 0

    #: On an accelerator the labels (moved there by the preprocessor) are read at the first step and every this many
    #: (:data:`kdplug.teachers.base.DEVICE_READ_INTERVAL`); on the CPU, every step.
    LABEL_CHECK_INTERVAL = DEVICE_READ_INTERVAL

    def reads_labels(self, data_samples: Sequence) -> bool:
        """Whether this step compares the batch's labels with the store's: every step on the CPU; on an accelerator
        the first step and every :attr:`LABEL_CHECK_INTERVAL` (a wrong dataset has wrong labels in nearly every
        batch)."""
        if 'gt_label' not in data_samples[0]:
            return False
        on_cpu = torch.as_tensor(data_samples[0].gt_label).device.type == 'cpu'
        return on_cpu or self.steps % self.LABEL_CHECK_INTERVAL == 1

    def identity(self) -> Optional[str]:
        """The teacher checkpoint's sha256, as the online teacher's: a run may resume from the store of its teacher
        or from that teacher online, not from another teacher."""
        if self._identity is None:
            self._identity = checkpoint_identity(self.checkpoint)
        return self._identity

    def check_data(self, dataset: Optional[Mapping[str, Any]], num_images: int) -> None:
        """Refuse a run whose training pipeline (every transform before the packer: the pixels of each view), dataset
        (:func:`dataset_identity`: another split whose files have the same names, ``test/cat/0000.jpg`` for
        ``train/cat/0000.jpg``, passes the per-step file check) or number of images is not the store's: a pipeline of
        other parameters can draw views the store holds (a smaller padding, another crop size, a resize before the
        crop) whose pixels differ."""
        if not isinstance(dataset, Mapping):
            raise TeacherCacheError(f'{self.description}: the run\'s training dataset config is unknown ({dataset!r}: '
                                    'a Runner built without a config, or from a dataset object), so the store cannot '
                                    'be checked against its pipeline; build the Runner with Runner.from_cfg')
        here, there = pixel_pipeline(dataset.get('pipeline')), pixel_pipeline(self.store.header.get('pipeline'))
        if here != there:
            step = next((i for i, (a, b) in enumerate(zip(here, there)) if a != b), min(len(here), len(there)))
            raise TeacherCacheError(
                f'the teacher cache {self.store_path} was made with another training pipeline: transform {step} is '
                f'{here[step] if step < len(here) else "absent"} here, '
                f'{there[step] if step < len(there) else "absent"} in the store. Train with the pipeline of the '
                'cache job, or make the store again from this config')
        here, there = dataset_identity(dataset), dataset_identity(self.store.header.get('dataset'))
        if here != there:
            differ = sorted(key for key in set(here) | set(there) if here.get(key) != there.get(key))
            raise TeacherCacheError(
                f'the teacher cache {self.store_path} was made from another dataset: '
                + '; '.join(f'{key} {here.get(key, "absent")!r} here, {there.get(key, "absent")!r} in the store'
                            for key in differ)
                + '. Train on the dataset of the cache job (its data_root may differ), or make the store again from '
                'this config')
        if num_images != self.store.num_images:
            raise TeacherCacheError(f'the teacher cache {self.store_path} holds {self.store.num_images} images, this '
                                    f'run trains on {num_images}: the store was made from another dataset or subset; '
                                    'make it again from this config')
        self.data_checked = True

    def check_schedule(self, seed: Optional[int], max_epochs: Optional[int]) -> None:
        """An epochs-mode store holds the views of ``epochs`` epochs drawn with ``seed``: a run of another seed met a
        view it does not hold at its first step, and a run of more epochs trained them, then stopped at the first
        step past them, each with a message that listed five possible causes."""
        header = self.store.header
        if header['mode'] != 'epochs':
            return
        made_seed, made_epochs = header.get('seed'), header.get('epochs')
        if made_seed is not None and seed != made_seed:
            raise TeacherCacheError(f'the teacher cache {self.store_path} holds the views of a run seeded with '
                                    f'{made_seed} (epochs mode); this run\'s seed is {seed}: train with '
                                    f'randomness.seed={made_seed}, or make the store again with this seed')
        if made_epochs is not None and max_epochs is not None and max_epochs > made_epochs:
            raise TeacherCacheError(f'the teacher cache {self.store_path} holds the views of {made_epochs} epoch(s) '
                                    f'(epochs mode); this run trains {max_epochs}: train with '
                                    f'train_cfg.max_epochs={made_epochs}, or make the store again with --epochs '
                                    f'{max_epochs}')

    def teach(self, task: Task, inputs: Any, data_samples: List, student: StudentOutput,
              positions: Sequence[str] = (), with_logits: bool = True
              ) -> Tuple[Optional[List[Tensor]], Dict[str, Tensor]]:
        if positions:
            raise ValueError(f'{type(self).__name__} holds logits only, not the teacher\'s features at '
                             f'{sorted(positions)}: use CheckpointTeacher for feature-level losses')
        if not self.data_checked:
            raise TeacherCacheError(
                f'{self.description} has not been shown the run\'s training data: add default_hooks = dict('
                "teacher_data=dict(type='kdplug.TeacherDataCheckHook')) (configs/_base_/distill_runtime.py has it), "
                'which compares the pipeline and the number of images with the store\'s before training')
        rows = student.rows
        if len(rows) != 1 or rows[0].logits.shape[0] != len(data_samples):
            raise ValueError(f'{type(self).__name__} serves one row per image (one view, ClassificationTask); '
                             f'{type(task).__name__} gives {sum(r.logits.shape[0] for r in rows)} rows for '
                             f'{len(data_samples)} images')
        missing = [key for key in ('sample_idx', 'view') if key not in data_samples[0].metainfo]
        if missing:
            raise ValueError(f'the data samples lack {missing}: the training pipeline must use kdplug\'s replayable '
                             "transforms and PackInputs(meta_keys=(..., 'sample_idx', 'view'))")
        index = [s.metainfo['sample_idx'] for s in data_samples]
        paths = [s.metainfo['img_path'] for s in data_samples] if 'img_path' in data_samples[0].metainfo else None
        self.steps += 1
        labels = sample_labels(data_samples) if self.reads_labels(data_samples) else None
        # the files' sizes at the first step and every interval (a stat per image: slow on network file systems); a
        # copy of the dataset with other pixels differs in nearly every batch
        self.store.check_images(index, paths, labels, sizes=(self.steps - 1) % self.LABEL_CHECK_INTERVAL == 0)
        logits = self.store.lookup(index, [s.metainfo['view'] for s in data_samples])
        target = rows[0].logits
        return [torch.from_numpy(logits).to(device=target.device, dtype=torch.float32)], {}

    def extra_repr(self) -> str:
        return f'store={self.store_path!r}'
