"""Export the student of a kdplug distillation checkpoint: its weights, loadable with the student's own config by
plain mmpretrain / mmdet, and that config beside them (student.pth -> student.py).

    python tools/export_student.py work_dirs/kd_xxx/epoch_240.pth student.pth
    # then: mmpretrain.apis.ImageClassificationInferencer('student.py', 'student.pth'), mmdet's
    # DetInferencer('student.py', 'student.pth'), or tools/test.py student.py student.pth

Given a plain mmpretrain / mmdet run's checkpoint (a teacher's), it writes that model's weights alone, without the
optimizer and mmengine's message hub, which torch's weights-only loading in the libraries' inferencers refuses, and
the run's config beside them.

A student built only from mmpretrain / mmdet components needs no kdplug to load; one that uses kdplug's components
(its CIFAR backbones, letKD's KD layers, which stay at inference) needs kdplug installed beside mmpretrain, which
then finds them by name (``kdplug.ResNet8x4``): no custom_imports.
"""
import argparse
import os
from typing import Optional, Sequence

from kdplug.distillers.export import export_student
from kdplug.tools import read_config


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('checkpoint', help='a checkpoint written by a kdplug distillation run')
    parser.add_argument('out', help='where to write the student-only checkpoint (its config: the same name, .py); '
                        'a folder: student.pth in it')
    parser.add_argument('--config', help="the run's config file (default: the one mmengine saved in the checkpoint)")
    parser.add_argument('--no-config', action='store_true', help="write the weights only, not the student's config")
    parser.add_argument('--force', action='store_true',
                        help='replace existing output files that an export did not write (by default they stay)')
    args = parser.parse_args(argv)
    if os.path.isdir(args.out) or args.out.endswith(os.sep):  # as mmengine's tools take a folder: a file in it
        args.out = os.path.join(args.out, 'student.pth')
    config_out = None if args.no_config else os.path.splitext(args.out)[0] + '.py'
    if config_out is not None and os.path.abspath(config_out) == os.path.abspath(args.out):
        parser.error(f'{args.out}: name the weights file .pth (the student\'s config is written beside it as .py)')
    try:
        config = read_config(args.config) if args.config else None
        exported = export_student(args.checkpoint, args.out, config_out, config, force=args.force)
    except (OSError, RuntimeError, ValueError) as err:  # a wrong or damaged file: the message says which and why
        raise SystemExit(f'export_student: {err}') from None
    print(f'wrote {args.out}: {len(exported["state_dict"])} student tensors')
    if config_out is not None:
        print(f'wrote {config_out}: the student\'s own config (e.g. python tools/test.py {config_out} {args.out})')


if __name__ == '__main__':
    main()
