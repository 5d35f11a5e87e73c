"""The letKD codewords file (Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide",
BMVC 2023, arXiv:2309.02843): the teacher's codewords that ``tools/fit_codewords.py`` fits offline and
:class:`kdplug.letkd.loss.LetKDLoss` reads at the first training step.

``torch.save`` of a dict of tensors, strings and numbers, read back through kdplug's weights-only loader
(:func:`kdplug.engine.checkpoint.load_checkpoint_file`: ``weights_only=True``, nothing callable)::

    {'format': 'kdplug.letkd.codewords/1',
     'sections': {'out':    {'level': 'penultimate', 'codewords': (K, D), 'teacher_stage', 'num_vectors',
                             'num_images'},
                  'layer2': {'level': 'intermediate', 'lda_weight': (m, D), 'lda_bias': (m,), 'prototypes': (C*K, m),
                             'valid': (C*K,) bool, 'scores': (C*K, C*K), 'subclasses': K, ...}},
     'meta': {'config', 'teacher_checkpoint', 'teacher_identity', 'seed', 'augment', 'created'}}

``teacher_identity`` is the sha256 of the teacher checkpoint (a URL stands for itself): a run whose teacher is
another checkpoint is refused, as codewords of another teacher's features assign nothing meaningful.

Sections are keyed by the student module's position; :data:`SECTION_TENSORS` names the tensors of each level.
"""
import os
from typing import Dict, Mapping, Optional

import torch

#: The name of the format, before its version.
FORMAT_NAME = 'kdplug.letkd.codewords'
#: ``format`` key of a codewords file written by tools/fit_codewords.py (name / version).
CODEWORDS_FORMAT = f'{FORMAT_NAME}/1'
#: The command that fits the file, named in every error that asks for a new one.
FIT_TOOL = 'tools/fit_codewords.py'
#: The tensors of a section, by level (the levels of letKD: letKD-1 penultimate, letKD-2 intermediate too).
SECTION_TENSORS = {'penultimate': ('codewords', ),
                   'intermediate': ('lda_weight', 'lda_bias', 'prototypes', 'valid', 'scores')}
LEVELS = tuple(SECTION_TENSORS)


def new_codewords_file(meta: Optional[Mapping] = None) -> Dict:
    """An empty codewords file (no sections yet) with ``meta`` (what made it: config, teacher checkpoint...)."""
    return {'format': CODEWORDS_FORMAT, 'sections': {}, 'meta': dict(meta or {})}


def save_codewords_file(path: str, contents: Mapping) -> None:
    """Write ``contents`` (a file of :func:`new_codewords_file` with its sections) to ``path``, creating its folder."""
    if contents.get('format') != CODEWORDS_FORMAT:
        raise ValueError(f'not a letKD codewords file (format {contents.get("format")!r}, expected '
                         f'{CODEWORDS_FORMAT!r})')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(dict(contents), path)


def load_codewords_file(path: str) -> Dict:
    """A codewords file of tools/fit_codewords.py, loaded with ``weights_only=True`` and checked."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f'the letKD codewords file {path!r} does not exist. Fit it first, with the trained teacher: '
            f'python {FIT_TOOL} CONFIG (writes the file the config names; --device cuda on a GPU)')
    from kdplug.engine.checkpoint import load_checkpoint_file
    loaded = load_checkpoint_file(path, role='letKD codewords',
                                  remedy=f'Fit them again: python {FIT_TOOL} CONFIG')
    found = loaded.get('format') if isinstance(loaded, dict) else None
    if isinstance(found, str) and found.startswith(f'{FORMAT_NAME}/') and found != CODEWORDS_FORMAT:
        raise ValueError(f'{path!r} is a letKD codewords file of format {found!r}; this kdplug reads '
                         f'{CODEWORDS_FORMAT!r}: fit them again with python {FIT_TOOL} CONFIG')
    if found != CODEWORDS_FORMAT:
        raise ValueError(f'{path!r} is not a letKD codewords file of {FIT_TOOL} (format {CODEWORDS_FORMAT!r})')
    return loaded


def codewords_section(loaded: Mapping, student_module: str, level: str, where: str) -> Mapping:
    """The section of ``student_module`` in a loaded file (or ``loaded`` itself when it is a section), checked
    against the ``level`` of the loss that reads it; ``where`` names the source in errors."""
    section = loaded['sections'].get(student_module) if 'sections' in loaded else loaded
    if section is None:
        raise ValueError(f'{where} has no codewords for the student module {student_module!r} (it has '
                         f'{sorted(loaded["sections"])}): fit them again with python {FIT_TOOL} CONFIG')
    if section.get('level') != level:
        raise ValueError(f'{where}: the codewords of {student_module!r} are for the {section.get("level")} '
                         f'level, the loss is {level!r}: fit them again with python {FIT_TOOL} CONFIG')
    missing = [name for name in SECTION_TENSORS[level] if name not in section]
    if missing:
        raise ValueError(f'{where}: section {student_module!r} lacks {missing}')
    return section


def check_fitted_from(loaded: Mapping, teacher_checkpoint: Optional[str], where: str) -> None:
    """Refuse codewords fitted from another teacher checkpoint than ``teacher_checkpoint`` (the run's; None: not
    known, nothing compared): they assign another teacher's features. The sha256 of the checkpoint is compared."""
    fitted_from = (loaded.get('meta') or {}).get('teacher_identity')
    if not fitted_from or not teacher_checkpoint:
        return
    from kdplug.engine.checkpoint import checkpoint_identity
    if checkpoint_identity(teacher_checkpoint) != fitted_from:
        raise ValueError(f'{where}: the codewords were fitted from another teacher checkpoint '
                         f'({loaded["meta"].get("teacher_checkpoint")!r}, sha256 {fitted_from[:12]}...) than this '
                         f'run\'s ({teacher_checkpoint!r}): they assign another teacher\'s features. Fit '
                         f'them again with python {FIT_TOOL} CONFIG')
