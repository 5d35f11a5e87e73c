"""Export the student of a kdplug distillation checkpoint: its weights only, loadable with the student's own
config by plain mmpretrain / mmdet.

    python tools/export_student.py work_dirs/kd_xxx/epoch_240.pth student.pth
    # then: mmpretrain.apis.ImageClassificationInferencer(student_config, 'student.pth'), or tools/test.py

A student built only from mmpretrain / mmdet components needs no kdplug to load; one that uses kdplug's components
(its CIFAR backbones, letKD's KD layers, which stay at inference) needs kdplug installed beside mmpretrain, which
then finds them by name (``kdplug.ResNet8x4``): no custom_imports.
"""
import argparse
from typing import Optional, Sequence

from kdplug.distillers.export import export_student


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='a checkpoint written by a kdplug distillation run')
    parser.add_argument('out', help='where to write the student-only checkpoint')
    args = parser.parse_args(argv)
    try:
        exported = export_student(args.checkpoint, args.out)
    except (OSError, RuntimeError, ValueError) as err:  # a wrong or damaged file: the message says which and why
        raise SystemExit(f'export_student: {err}') from None
    print(f'wrote {args.out}: {len(exported["state_dict"])} student tensors')


if __name__ == '__main__':
    main()
