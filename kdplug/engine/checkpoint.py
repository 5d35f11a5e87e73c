"""Loading checkpoints with ``weights_only=True``, including mmengine's own run checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default; an mmengine 0.10.7 run checkpoint also holds its
message hub (``HistoryBuffer`` objects with numpy arrays), so mmengine's resume and ``load_from`` fail. Rather than
turning the safety off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) we allow exactly the types mmengine writes.
"""
import codecs
import os
from typing import Any, Dict, List

import torch


def mmengine_safe_globals() -> List[Any]:
    """The non-tensor types an mmengine 0.10.7 checkpoint holds."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    types: List[Any] = [HistoryBuffer, np.ndarray, np.dtype]
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    types += [_reconstruct, scalar]
    # numpy pickles array bytes through codecs.encode; HistoryBuffer keeps bound methods (numpy's min, max...),
    # pickled as getattr(array, 'min'). The unpickler still refuses to *call* anything outside this list.
    types += [codecs.encode, getattr]
    types += [type(np.dtype(name)) for name in ('float64', 'float32', 'float16', 'int64', 'int32', 'bool')]
    return types


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (mmengine's resume and ``load_from``) read mmengine checkpoints.

    Called by tools/train.py and tools/test.py; safe to call more than once.
    """
    torch.serialization.add_safe_globals(mmengine_safe_globals())


def load_checkpoint_file(path: str, role: str = 'teacher') -> Any:
    """A checkpoint file or URL, loaded with ``weights_only=True`` (mmengine's own types allowed)."""
    # torch's safe_globals context removes on exit what it added, even globals allowed before it: add only the
    # missing ones, or a later resume in this process (allow_mmengine_checkpoints) would lose them.
    allowed = torch.serialization.get_safe_globals()
    missing = [g for g in mmengine_safe_globals() if g not in allowed]
    with torch.serialization.safe_globals(missing):
        if path.startswith(('http://', 'https://')):
            return torch.hub.load_state_dict_from_url(path, map_location='cpu', weights_only=True)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'{role} checkpoint {path!r} does not exist. Train the {role} first (tools/train.py with its '
                f'config, e.g. configs/teachers/), then point {role}_ckpt at the .pth it wrote, or give a URL')
        try:
            return torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:
            raise RuntimeError(
                f'{role} checkpoint {path!r} could not be loaded with weights_only=True ({err}). kdplug only '
                "loads checkpoints that hold weights (and mmengine's own training state); re-save the "
                'state_dict of a trusted checkpoint with torch.save') from err


def load_weights(path: str, role: str = 'teacher') -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint file or URL (``checkpoint['state_dict']`` for mmengine checkpoints)."""
    checkpoint = load_checkpoint_file(path, role)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f'{role} checkpoint {path!r} holds a {type(checkpoint).__name__}, not a state dict')
    return checkpoint
