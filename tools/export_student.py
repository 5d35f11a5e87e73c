"""Export the student of a kdplug distillation checkpoint, loadable in plain mmpretrain / mmdet (no kdplug).

    python tools/export_student.py work_dirs/kd_xxx/epoch_240.pth student.pth
    # then, with mmpretrain alone: mmpretrain.apis.ImageClassificationInferencer(student_config, 'student.pth')
"""
import argparse

from kdplug.distillers.export import export_student


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='a checkpoint written by a kdplug distillation run')
    parser.add_argument('out', help='where to write the student-only checkpoint')
    args = parser.parse_args(argv)
    exported = export_student(args.checkpoint, args.out)
    print(f'wrote {args.out}: {len(exported["state_dict"])} student tensors')


if __name__ == '__main__':
    main()
