"""Export the student of a kdplug distillation checkpoint: its weights only, loadable with the student's own
config by plain mmpretrain / mmdet.

    python tools/export_student.py work_dirs/kd_xxx/epoch_240.pth student.pth

The code is kdplug.tools.export_student (also ``kdplug-export-student`` from an installed kdplug).
"""
from kdplug.tools.export_student import main

if __name__ == '__main__':
    main()
