"""Loading checkpoints with ``weights_only=True``, mmengine's own run checkpoints included, and nothing callable.

torch >= 2.6 loads with ``weights_only=True`` by default: its unpickler builds only tensors, containers and the
types on an allow-list, and calls only allow-listed functions. An mmengine 0.10.7 run checkpoint also holds its
message hub: ``HistoryBuffer`` objects (numpy arrays inside) whose pickled state names their statistics methods,
written by pickle protocol 2 as ``getattr(HistoryBuffer, 'min')``. Allowing the real ``builtins.getattr`` would let
a crafted file chain it with torch's own ``_rebuild_from_type_v2`` (which calls its first argument) into any
function of any module. So kdplug allows, under the name ``builtins.getattr``, a stand-in that resolves exactly
those four methods of ``HistoryBuffer`` and refuses everything else (:func:`history_buffer_method`), plus the plain
numpy types an array is rebuilt from. The allow-list is process-wide (mmengine's resume calls ``torch.load``
itself), so it must be, and is, safe to leave on.
"""
import os
import pickle
import warnings
import zipfile
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch

#: The statistics methods mmengine 0.10.7's ``HistoryBuffer.__getstate__`` pickles (``_set_default_statistics``).
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


@contextmanager
def replaced_whole(path: Union[str, 'os.PathLike']) -> Iterator[str]:
    """``with replaced_whole(path) as partial:`` write ``partial``; when the block ends without an error the file is
    flushed to disk and renamed over ``path``: a reader, or a crash at any moment, sees the old file or the new one,
    never a part (a killed export left a truncated student.pth, a killed cache job half a header)."""
    partial = f'{os.fspath(path)}.partial'
    try:
        yield partial
        with open(partial, 'rb') as file:
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:  # an error (not a kill) leaves no stray part behind
        if os.path.isfile(partial):
            os.remove(partial)
        raise


def history_buffer_method(owner: Any, name: Any) -> Callable:
    """The only ``getattr`` the weights-only unpickler may call: ``HistoryBuffer.<min|max|current|mean>``."""
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({owner!r}, {name!r}) while loading a checkpoint: kdplug only resolves the statistics '
        f'methods {HISTORY_BUFFER_METHODS} of mmengine\'s HistoryBuffer. The file was not written by mmengine / '
        'torch.save of weights, or it was crafted to run code: do not load it')


def mmengine_safe_globals() -> List[Any]:
    """What an mmengine 0.10.7 checkpoint needs beyond torch's own allow-list: types, and one restricted getattr."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    # _reconstruct only allocates an ndarray (of an allow-listed subtype), scalar only reinterprets bytes; bytes
    # themselves come through _codecs.encode, which torch allows already.
    dtypes = [type(np.dtype(name)) for name in ('float64', 'float32', 'float16', 'int64', 'int32', 'bool')]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtypes,
            (history_buffer_method, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (kdplug's loads, mmengine's resume and ``load_from``) read mmengine
    checkpoints. Safe to call more than once; called when kdplug's plugins load and by kdplug's tools."""
    allowed = torch.serialization.get_safe_globals()
    if getattr in allowed:  # someone allowed the real getattr: with it, a checkpoint can run code
        warnings.warn('builtins.getattr was on torch\'s weights_only allow-list (added outside kdplug): it lets a '
                      'crafted checkpoint run code, so kdplug removed it and allows only its restricted stand-in')
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals([g for g in allowed if g is not getattr])
    if os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0').lower() in ('1', 'y', 'yes', 'true'):
        warnings.warn('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: mmengine\'s resume / load_from will unpickle '
                      'checkpoints without restrictions, so a crafted checkpoint can run code. Unset it: kdplug '
                      'loads mmengine checkpoints with weights_only=True')
    torch.serialization.add_safe_globals(mmengine_safe_globals())


ZIP_MAGIC = b'PK\x03\x04'  # torch.save's default (zip) format
#: torch.save's legacy format (``_use_new_zipfile_serialization=False``) starts with a pickle of protocol 2 or more.
PICKLE_HEADS = (b'\x80\x02', b'\x80\x03', b'\x80\x04', b'\x80\x05')


def unreadable_reason(path: str) -> Optional[str]:
    """Why the local file ``path`` cannot be a complete checkpoint (missing, a folder, empty, truncated, another
    kind of file), or None.

    A torch checkpoint is a zip archive whose directory is written last: an interrupted write leaves a file
    without it, which this detects without reading the tensors.
    """
    if not os.path.exists(path):
        return 'does not exist'
    if os.path.isdir(path):
        return 'is a directory, not a checkpoint file'
    size = os.path.getsize(path)
    if size == 0:
        return 'is empty (0 bytes): its write was interrupted, or it is not a checkpoint'
    with open(path, 'rb') as file:
        head = file.read(4)
    if head == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            return f'is truncated or corrupt ({size} bytes; {err}): its write was probably interrupted'
    elif head[:2] not in PICKLE_HEADS:
        return f'is not a torch checkpoint (it starts with {head!r}: neither a zip archive nor a pickle)'
    return None


def load_checkpoint_file(path: str, role: str = 'teacher', map_location: Any = 'cpu',
                         remedy: str = 'Give the path of a complete .pth file (an mmengine run writes epoch_<n>.pth '
                                       'into its work dir)') -> Any:
    """A checkpoint file or URL, loaded with ``weights_only=True`` (mmengine's own types allowed, nothing callable).

    ``role`` names the file in errors ('teacher', 'distillation run', 'letKD codewords'...), ``remedy`` says what
    to do about an incomplete one (a file of another tool is made again with that tool).
    """
    allow_mmengine_checkpoints()
    if path.startswith(('http://', 'https://')):
        try:
            return torch.hub.load_state_dict_from_url(path, map_location=map_location, weights_only=True)
        except OSError as err:  # URLError, HTTPError, a failed write: urllib's words name neither file nor role
            where = 'model.teacher.checkpoint' if role == 'teacher' else 'the path in the config'
            raise RuntimeError(f'{role} checkpoint {path!r} could not be downloaded ({type(err).__name__}: {err}). '
                               f'Download it where the network is reachable and set {where} to the local file '
                               f'(or put it in {torch.hub.get_dir()}/checkpoints)') from err
    reason = unreadable_reason(path)
    where = '' if os.path.isabs(path) else f' (relative to the working directory {os.getcwd()})'
    if reason == 'does not exist':
        raise FileNotFoundError(
            f'{role} checkpoint {path!r}{where} does not exist. Train the {role} first (tools/train.py with its '
            f'config: configs/teachers/, configs/detection/teachers/, or a plugin\'s), then set '
            'model.teacher.checkpoint to the .pth it wrote, or give a URL' if role == 'teacher' else
            f'{role} checkpoint {path!r}{where} does not exist: check the path')
    if reason is not None:
        raise RuntimeError(f'{role} checkpoint {path!r} {reason}. {remedy}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's text advises weights_only=False; keep only what it found ("Unsupported global: os.system")
        lines = [line.strip() for line in str(err).split('Check the documentation')[0].splitlines() if line.strip()]
        found = lines[-1].replace('WeightsUnpickler error:', '').strip() if lines else type(err).__name__
        if found.startswith('Unsupported operand'):  # not a pickle stream at all: damaged, or another format
            raise RuntimeError(f'{role} checkpoint {path!r} could not be read ({found}): it is not a torch '
                               'checkpoint, or it is damaged (a pickle of another kind is not loaded: the '
                               'weights-only loader reads tensors and plain data, and never runs what a file holds)'
                               ) from err
        raise RuntimeError(
            f'{role} checkpoint {path!r} was refused by the weights-only loader ({found}): kdplug only loads '
            'checkpoints that hold weights and mmengine\'s own training state, never code. If the file is yours '
            'and trusted, re-save its state_dict with torch.save(model.state_dict(), path)') from err
    except Exception as err:
        raise RuntimeError(f'{role} checkpoint {path!r} could not be read ({type(err).__name__}: {err}): it is '
                           'not a torch checkpoint, or it is damaged') from err


def missing_run_state(path: str) -> List[str]:
    """What a checkpoint to resume from lacks of a training run's state: 'optimizer state' and 'epoch / iteration
    count' (mmengine's ``optimizer`` and ``meta``). A ``best_*.pth`` (saved without the optimizer) or an exported
    student lacks them, and mmengine resumes from it without a word, its schedule restarted."""
    checkpoint = load_checkpoint_file(path, role='the --resume')
    if not isinstance(checkpoint, dict):
        return ['optimizer state', 'epoch / iteration count']
    meta = checkpoint.get('meta')
    return [what for what, present in (('optimizer state', 'optimizer' in checkpoint),
                                       ('epoch / iteration count', isinstance(meta, dict) and 'iter' in meta))
            if not present]


def checkpoint_identity(checkpoint: str) -> str:
    """What a file made from a teacher records of it (a teacher cache, letKD's codewords): the sha256 of a local
    checkpoint, which a copy or a move keeps and a retrained teacher does not; a URL stands for itself."""
    import hashlib
    if not os.path.isfile(checkpoint):
        return checkpoint
    digest = hashlib.sha256()
    with open(checkpoint, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def load_weights(path: str, role: str = 'teacher') -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint file or URL (``checkpoint['state_dict']`` for mmengine checkpoints)."""
    return load_weights_and_classes(path, role)[0]


def load_weights_and_classes(path: str, role: str = 'teacher') -> Tuple[Dict[str, torch.Tensor],
                                                                         Optional[Tuple[str, ...]]]:
    """The state dict of a checkpoint and the class names it was trained on, where its meta records them (an
    mmengine run's ``meta.dataset_meta.classes``, mmdet 2.x's ``meta.CLASSES``; else None)."""
    checkpoint = load_checkpoint_file(path, role)
    classes = None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict):
        meta = checkpoint['meta']
        dataset_meta = meta.get('dataset_meta') if isinstance(meta.get('dataset_meta'), dict) else {}
        found = dataset_meta.get('classes', meta.get('CLASSES'))
        if isinstance(found, (list, tuple)) and found and all(isinstance(name, str) for name in found):
            classes = tuple(found)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f'{role} checkpoint {path!r} holds a {type(checkpoint).__name__}, not a state dict')
    return checkpoint, classes


def load_local_checkpoint(filename: str, map_location: Any = 'cpu') -> Any:
    """mmengine's loader of local checkpoint files, as kdplug loads them (:func:`load_checkpoint_file`)."""
    return load_checkpoint_file(os.path.expanduser(filename), role='the', map_location=map_location)


def route_local_checkpoint_loads() -> None:
    """Let mmengine's Runner load local checkpoints (``--resume``, ``load_from``, tools/test.py's checkpoint) with
    :func:`load_local_checkpoint`: a missing, damaged or foreign file, or one the weights-only loader refuses, gets
    a message that names the problem and the fix, not a bare traceback or torch's advice to load with
    ``weights_only=False``. Called by kdplug's tools (not at import: it replaces mmengine's loader of local paths
    process-wide)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


def load_checkpoints_strictly(runner: Any, config: str, fix: str) -> None:
    """Make an mmengine Runner's checkpoint loads strict. mmengine loads non-strictly (right for ``load_from`` when
    fine-tuning with another head), logging what does not fit: evaluating, or resuming, a checkpoint of another model
    (another class count, another backbone, a student-only file for a distillation config) would leave those parts as
    initialised, with the metrics of a random model or a resumed epoch count over fresh weights. ``fix`` ends the
    message."""
    load = runner.load_checkpoint

    def load_all(filename: str, map_location: Any = 'cpu', strict: bool = False,
                 revise_keys: Optional[list] = None) -> Any:  # strict whatever the caller asks
        try:  # mmengine's default revise_keys: a DDP wrapper's prefix dropped
            return load(filename, map_location=map_location, strict=True,
                        revise_keys=[(r'^module.', '')] if revise_keys is None else revise_keys)
        except RuntimeError as err:
            if 'do not match exactly' not in str(err):  # mmengine's words for a model / state dict mismatch
                raise
            # every key of a model, unexpected then missing: the cause drowned in ten kilobytes; each list is cut
            detail = '\n'.join(line if len(line) <= 500 else f'{line[:500]} ... ({line.count(",") + 1} in all)'
                                for line in str(err).strip().splitlines())
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            distilled = 'unexpected key in source state_dict: student.' in str(err) and \
                not any(key.startswith('student.') for key in model.state_dict())
            cause = (f'it is a distillation run\'s checkpoint (its weights are named student.*) and {config} a '
                     'model of its own: export the student first (python tools/export_student.py '
                     f'{filename} student.pth) and use student.py student.pth, or the distillation config. '
                     if distilled else '')
            raise SystemExit(f'the checkpoint {filename} does not fit the model of {config}: {cause}{detail}\n'
                             f'{fix}') from None
    runner.load_checkpoint = load_all
