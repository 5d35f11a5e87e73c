"""The teacher cache on disk: a teacher's logits for every (image, view), memory-mapped, checked by what made it.

A store is a folder:

* ``header.json``: format, mode (``views``: every discrete view of each image; ``epochs``: the views a seeded run
  draws, epoch by epoch), ``slots`` (views per image), the view parameters' layout, the dtype, the class count and
  what it was made from (sha256 of the teacher checkpoint, the teacher's model config, the pipeline, the dataset and
  its length, the classes, the seed); ``complete`` once every image is written;
* ``logits.npy`` (``num_images * slots``, C) float16 or float32, and ``params.npy`` (``num_images * slots``, P)
  int32: the view each row was computed on (:func:`view_vector`), so a lookup checks the view it serves;
* ``done.npy`` uint8: what is written, per image in ``views`` mode (``num_images``,), per epoch and rank in
  ``epochs`` mode (``epochs * world_size``,) (a killed job resumes at the first one not done);
* ``images.json``: each image's file, as its last two path components (``class/name.jpg``), and each image's label,
  so a run on another dataset (another list, order, subset or split) is caught at the first image that differs,
  wherever its data root is; a dataset held as arrays (mmpretrain's CIFAR10 / CIFAR100) has no files, only labels.

Row ``i * slots + s`` is slot ``s`` of image ``i`` (the dataset's ``sample_idx``): its ``s``-th discrete view in
``views`` mode; in ``epochs`` mode the view it had in epoch ``s // k``, with ``k`` = ``slots / epochs`` the times one
image can come up in an epoch (2 where the sampler pads an epoch across several ranks with images drawn already).
All arrays are ``.npy`` files read with ``allow_pickle=False`` and ``mmap_mode``: opening a store reads no logits.
"""
import errno
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from kdplug.engine.checkpoint import replaced_whole

FORMAT = 'kdplug-teacher-cache/1'
HEADER, LOGITS, PARAMS, DONE, IMAGES = 'header.json', 'logits.npy', 'params.npy', 'done.npy', 'images.json'
DIRECTIONS = (None, 'horizontal', 'vertical', 'diagonal')


class TeacherCacheError(RuntimeError):
    """A store that cannot serve this run (another teacher, pipeline or dataset, a missing view, a shape)."""


def view_layout(view: Mapping[str, Sequence]) -> List[Tuple[str, int]]:
    """``[(transform name, number of ints)]`` of a recorded view, in a fixed (sorted) order."""
    return [(name, len(view[name])) for name in sorted(view)]


def view_vector(view: Mapping[str, Sequence], layout: Sequence[Tuple[str, int]]) -> List[int]:
    """A recorded view (``results['view']``) as ints in ``layout`` order; flip directions as their index in
    :data:`DIRECTIONS`."""
    if sorted(view) != [name for name, _ in layout]:
        raise TeacherCacheError(f'the view {dict(view)} has the transforms {sorted(view)}, the store '
                                f'{[name for name, _ in layout]}: the store was made with another pipeline')
    out: List[int] = []
    for name, _ in layout:
        for value in view[name]:
            out.append(DIRECTIONS.index(value) if value is None or isinstance(value, str) else int(value))
    return out


class TeacherCacheStore:
    """A store folder (see the module docstring), opened for reading or being written."""

    def __init__(self, path: str, header: Dict[str, Any], mode: str = 'r') -> None:
        self.path, self.header = Path(path), header
        self._images: Optional[Dict[str, list]] = None
        arrays = array_layout(header, self.path)
        self.slots, self.num_images = int(header['slots']), int(header['num_images'])
        self.layout = [tuple(item) for item in header['layout']]
        self.logits, self.params, self.done = (self._load(name, mode, *arrays[name]) for name in (LOGITS, PARAMS, DONE))

    def _load(self, name: str, mode: str, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """One array of the store, memory-mapped, as the header says it is: a damaged or swapped file is refused."""
        try:
            array = np.load(self.path / name, mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # an empty file: numpy's EOFError
            raise TeacherCacheError(f'{self.path / name} cannot be read ({exc.__class__.__name__}: {exc}): the store '
                                    f'is damaged; {REMAKE}') from None
        if array.shape != shape or array.dtype != dtype:
            raise TeacherCacheError(f'{self.path / name} holds {array.dtype} {array.shape}, its header says {dtype} '
                                    f'{shape}: the store is damaged or mixed with another; {REMAKE}')
        return array

    # -- making one ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str, header: Dict[str, Any], images: Optional[Sequence[str]] = None,
               labels: Optional[Sequence[Sequence[int]]] = None) -> 'TeacherCacheStore':
        """A new store (or the one already at ``path`` when its header matches: a resumed job); ``images``: each
        image's file path, ``labels``: each image's label(s), as ints."""
        path = Path(path)
        header = as_json(dict(header, format=FORMAT, complete=False))  # a resumed job's header compares equal
        arrays = array_layout(header, path)
        if (path / HEADER).is_file():
            old = json.loads((path / HEADER).read_text())
            differs = sorted(k for k in set(old) | set(header) if k != 'complete' and old.get(k) != header.get(k))
            if differs:
                raise TeacherCacheError(f'{path} holds a store made with other settings ({", ".join(differs)}): '
                                        'give another --out, or delete it to start again')
            return cls(path, old, mode='r+')
        path.mkdir(parents=True, exist_ok=True)
        reserve_space(path, sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in arrays.values()))
        # each file's fingerprint too: a copy of the dataset whose files have the same names and other pixels
        # (another resize, a re-encoding, two files swapped) was served the logits of the store's images
        write_json(path / IMAGES, {'images': [image_key(p) for p in images or []],
                                   'fingerprints': [file_fingerprint(p) for p in images or []],
                                   'labels': [[int(v) for v in label] for label in labels or []]})
        for name, (shape, dtype) in arrays.items():
            np.lib.format.open_memmap(path / name, mode='w+', dtype=dtype, shape=shape).flush()
            allocate(path / name)
        write_json(path / HEADER, header)  # last: a folder without it is not a store
        return cls(path, header, mode='r+')

    def write(self, index: int, logits: np.ndarray, params: np.ndarray) -> None:
        """All the slots of image ``index`` (views mode); marked done."""
        rows = slice(index * self.slots, (index + 1) * self.slots)
        self.logits[rows] = logits
        self.params[rows] = params
        self.done[index] = 1

    def write_rows(self, indices: Sequence[int], slots: Sequence[int], logits: np.ndarray, params: np.ndarray) -> None:
        """Slot ``slots[k]`` of image ``indices[k]`` (epochs mode); mark the epoch with :meth:`done_unit`."""
        rows = np.asarray(indices, dtype=np.int64) * self.slots + np.asarray(slots, dtype=np.int64)
        self.logits[rows] = logits
        self.params[rows] = params

    def done_unit(self, unit: int) -> None:
        self.done[unit] = 1

    def flush(self) -> None:
        self.logits.flush()
        self.params.flush()
        self.done.flush()  # after the rows it vouches for

    def mark_complete(self) -> None:
        self.flush()
        if not self.done.all():
            raise TeacherCacheError(f'{int((self.done == 0).sum())} images are not written yet')
        self.header['complete'] = True
        write_json(self.path / HEADER, self.header)

    # -- reading ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> 'TeacherCacheStore':
        path = Path(path)
        try:
            header = json.loads((path / HEADER).read_text())
        except (OSError, ValueError) as exc:
            raise TeacherCacheError(f'{path} is not a teacher cache ({exc.__class__.__name__}: {exc}): make one with '
                                    'python tools/cache_teacher.py CONFIG') from None
        if header.get('format') != FORMAT:
            raise TeacherCacheError(f'{path}: format {header.get("format")!r}, expected {FORMAT!r}')
        if not header.get('complete'):
            raise TeacherCacheError(f'{path} is incomplete (the cache job stopped before the end): run the same '
                                    'tools/cache_teacher.py command again, it resumes where it stopped')
        return cls(path, header)

    def _recorded_images(self) -> Dict[str, list]:
        """images.json: each image's file and label(s), lists; a damaged or hand-edited file is refused."""
        try:
            recorded = json.loads((self.path / IMAGES).read_text())
            images, labels = recorded['images'], recorded.get('labels', [])
            if not isinstance(images, list) or not isinstance(labels, list):
                raise TypeError(f'"images" and "labels" must be lists, got {type(images).__name__} and '
                                f'{type(labels).__name__}')
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TeacherCacheError(f'{self.path / IMAGES} cannot be read ({exc.__class__.__name__}: {exc}): the '
                                    f'store is damaged; {REMAKE}') from None
        # stores made before fingerprints recorded each file's size alone
        sizes = recorded.get('sizes', []) if isinstance(recorded.get('sizes', []), list) else []
        prints = recorded.get('fingerprints', []) if isinstance(recorded.get('fingerprints', []), list) else []
        return {'file': images, 'label': labels, 'fingerprint': prints or [f'{size}:' for size in sizes]}

    def check_images(self, sample_idx: Sequence[int], paths: Optional[Sequence[str]] = None,
                     labels: Optional[Sequence[Sequence[int]]] = None, sizes: bool = True) -> None:
        """Raise unless image ``sample_idx[k]`` of the store is the file ``paths[k]`` (and, with ``sizes``, of the
        recorded fingerprint: size and the CRC-32 of its first and last 8 KiB, :func:`file_fingerprint`) and has the
        label(s) ``labels[k]``; what the store or the run does not record is not compared."""
        if self._images is None:
            self._images = self._recorded_images()
        for what, values in (('file', None if paths is None else [image_key(p) for p in paths]),
                             ('label', None if labels is None else [[int(v) for v in label] for label in labels])):
            stored = self._images[what]
            if not stored or values is None:
                continue
            for index, value in zip(sample_idx, values):
                there = stored[int(index)] if 0 <= int(index) < len(stored) else 'nothing'
                if there != value:
                    raise TeacherCacheError(
                        f'image {int(index)} of this run has the {what} {value!r}, in the teacher cache {there!r}: '
                        'the store was made from another dataset (list, order, subset or split); make it again '
                        'from this config')
        recorded = self._images['fingerprint']
        if sizes and recorded and paths is not None:
            for index, path in zip(sample_idx, paths):
                there = str(recorded[int(index)]) if 0 <= int(index) < len(recorded) else ''
                here = file_fingerprint(path)
                if not there or not here:  # no file then (a dataset of arrays) or now: nothing to compare
                    continue
                size_there, _, crc_there = there.partition(':')
                size_here, _, crc_here = here.partition(':')
                if size_there != size_here or (crc_there and crc_there != crc_here):
                    what = (f'has {size_here} bytes; the store was made from a file of {size_there} bytes'
                            if size_there != size_here else
                            f'has other bytes (CRC-32 {crc_here}) than the store\'s file of its size ({crc_there})')
                    raise TeacherCacheError(
                        f'image {int(index)} of this run, {path}, {what} under that name: another copy of the '
                        'dataset (the same names, other pixels: another resize or encoding, files swapped). Make '
                        'the store again from this copy')

    def lookup(self, sample_idx: Sequence[int], views: Sequence[Mapping[str, Sequence]]) -> np.ndarray:
        """The rows of (image, view) pairs, (B, C): for each, the slot whose recorded view is that view."""
        wanted = np.asarray([view_vector(view, self.layout) for view in views], dtype=np.int32)
        index = np.asarray(sample_idx, dtype=np.int64)
        if index.min(initial=0) < 0 or index.max(initial=0) >= self.num_images:
            raise TeacherCacheError(f'sample index {int(index.max())} outside the {self.num_images} images of the '
                                    'store: it was made from another dataset')
        params = self.params.reshape(self.num_images, self.slots, -1)[index]      # (B, S, P)
        match = (params == wanted[:, None, :]).all(-1)                               # (B, S)
        found = match.any(1)
        if not found.all():
            first = int(np.flatnonzero(~found)[0])
            raise TeacherCacheError(
                f'the store has no view {dict(views[first])} of image {int(index[first])} ({self.header["mode"]} '
                'mode): ' + ('the student\'s run draws other views than the cache job did: run it with the same '
                             'seed, sampler, batch size, workers and world size as tools/cache_teacher.py (a run '
                             'resumed with persistent dataloader workers draws others too: their random state is '
                             'not in checkpoints), or make the store in views mode' if self.header['mode'] == 'epochs'
                             else
                             'the store was made with another pipeline'))
        return np.asarray(self.logits[index * self.slots + match.argmax(1)])

    def size_bytes(self) -> int:
        return sum(os.path.getsize(self.path / name) for name in (LOGITS, PARAMS, DONE, HEADER, IMAGES))


REMAKE = 'make it again with python tools/cache_teacher.py CONFIG (a new --out, or the old one deleted)'


def array_layout(header: Mapping[str, Any], path: Path) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """The shape and dtype of each array of a store with this header: rows ``num_images * slots`` of logits
    (``num_classes``) and view parameters (their ints per view), one done flag per image (views) or per epoch and
    rank (epochs)."""
    try:
        rows = int(header['num_images']) * int(header['slots'])
        width = sum(int(n) for _, n in header['layout'])
        units = int(header['num_images']) if header['mode'] == 'views' else \
            int(header['epochs']) * int(header.get('world_size', 1))
        return {LOGITS: ((rows, int(header['num_classes'])), np.dtype(header['dtype'])),
                PARAMS: ((rows, width), np.dtype(np.int32)), DONE: ((units,), np.dtype(np.uint8))}
    except (KeyError, TypeError, ValueError) as exc:
        raise TeacherCacheError(f'{path / HEADER} is not a complete store header ({exc.__class__.__name__}: {exc}); '
                                f'{REMAKE}') from None


def as_json(value: Any) -> Any:
    """A value as a store's header.json gives it back (tuples as lists, config dicts as dicts), so that what a run
    has compares with what a store recorded."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def readable_size(size: int) -> str:
    return f'{size / 2 ** 30:.2f} GiB' if size >= 2 ** 30 else f'{size / 2 ** 20:.1f} MiB'


def reserve_space(folder: Path, size: int) -> None:
    """Refuse a store the disk cannot hold, before any is written: a memory-mapped write past a full disk kills the
    job with SIGBUS, hours in, without a word."""
    free = shutil.disk_usage(folder).free
    if free < size:
        raise TeacherCacheError(f'the teacher cache needs {readable_size(size)} and {folder} has '
                                f'{readable_size(free)} free: give --out on a larger disk, or fewer views '
                                '(--mode epochs) or images')


def allocate(path: Path) -> None:
    """Give a new (sparse) array file its disk blocks now, so that another job filling the disk later cannot make
    a memory-mapped write fail; where the file system cannot (posix_fallocate unsupported), the free-space check
    before is what there is."""
    if not hasattr(os, 'posix_fallocate'):
        return
    with open(path, 'r+b') as file:
        try:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise TeacherCacheError(f'no space left for {path} ({readable_size(os.fstat(file.fileno()).st_size)})'
                                        ': give --out on a larger disk') from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


#: The bytes at each end of an image file that its fingerprint reads: a JPEG's tables, its size and the start of
#: its scan, which another encoding, resize or image changes; the whole of a CIFAR or Tiny-ImageNet file.
FINGERPRINT_BYTES = 8192


def file_fingerprint(path: str) -> str:
    """``'<size>:<crc32>'`` of an image file, the CRC-32 over its first and last FINGERPRINT_BYTES (two reads
    whatever its size: an ImageNet store reads 16 KiB of each file, not the dataset); '' where there is no file
    (a dataset held as arrays)."""
    try:
        with open(path, 'rb') as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(FINGERPRINT_BYTES)
            if size > 2 * FINGERPRINT_BYTES:
                file.seek(size - FINGERPRINT_BYTES)
            tail = file.read(FINGERPRINT_BYTES)
    except (OSError, TypeError):
        return ''
    return f'{size}:{zlib.crc32(tail, zlib.crc32(head)):08x}'


def image_key(path: str) -> str:
    """An image file by its last two path components (``airplane/0001.jpg``): independent of the data root."""
    parts = Path(str(path)).parts
    return '/'.join(parts[-2:])


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """``path`` replaced whole (a reader never sees half a header)."""
    with replaced_whole(path) as partial:
        Path(partial).write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


def first_difference(made_from: Mapping[str, Any], now: Mapping[str, Any]) -> Optional[str]:
    """The first key whose value differs between what a store was made from and this run, or None."""
    for key in sorted(set(made_from) | set(now)):
        if made_from.get(key) != now.get(key):
            return key
    return None
