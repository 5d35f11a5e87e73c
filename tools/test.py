"""Evaluate a checkpoint with a config (a kdplug distillation run's student, or a plain mmpretrain / mmdet model).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--cfg-options k=v ...]

The code is kdplug.tools.test (also ``kdplug-test`` and ``python -m kdplug.tools.test`` from an installed kdplug).
"""
from kdplug.tools.test import main

if __name__ == '__main__':
    main()
